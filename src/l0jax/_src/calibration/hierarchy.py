"""Hierarchical consistency: penalties on aggregates of the targets, without adding rows to M.

Fine targets (e.g. per district) often sit under coarser known totals (per state, national).
Instead of stacking the aggregate rows onto M (a larger matrix, and each aggregate counted once
among thousands of rows), each aggregation level is a sparse matrix ``A`` (aggregates x targets)
that sums fine predictions into aggregate predictions, and adds

    lambda * sum_k ((A @ (M @ w) - t)_k / (|t_k| + 1))**2

to the objective: the squared relative errors of the aggregates (the design PolicyEngine's
l0-python describes in ``hierarchical_penalty.md`` but never built). ``A @ (M @ w)`` costs one small
product with the m predictions per epoch, whatever the number of households.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.typing import DTypeLike

from l0jax._src import checks
from l0jax._src.calibration.diagnostics import relative_error
from l0jax._src.calibration.penalties import PenaltyTerm
from l0jax._src.operators import MatrixOperator, as_operator

Array = jax.Array


@jax.tree_util.register_pytree_node_class
class AggregateTerm(PenaltyTerm):
    """``strength * sum(((A @ predictions - targets) * scale)**2)``, with ``scale = 1 / (|targets| + 1)``.

    Args:
      op: the aggregation matrix ``A`` (k aggregates x m targets) as an operator.
      targets: the aggregate targets, shape (k,).
      strength: the multiplier, >= 0.
      name: the term's label, e.g. ``"aggregate_0"``.
    """

    def __init__(
        self, op: MatrixOperator, targets: Array, strength: Array, name: str, *, _scale: Array | None = None
    ):
        self.op = op
        self.targets = targets
        self.strength = strength
        self.name = name
        self.scale = 1.0 / (jnp.abs(targets) + 1.0) if _scale is None else _scale

    def value(self, weights: Array, predictions: Array) -> Array:
        """Sum of the squared relative errors of the aggregates (a scalar)."""
        del weights
        residual = (self.op.matvec(predictions) - self.targets) * self.scale
        return jnp.sum(jnp.square(residual))

    def tree_flatten(self):
        return (self.op, self.targets, self.strength, self.scale), self.name

    @classmethod
    def tree_unflatten(cls, name, children):
        op, targets, strength, scale = children
        return cls(op, targets, strength, name, _scale=scale)


def aggregation_matrix(labels: Sequence[Any]) -> tuple[sp.csr_matrix, list[Any]]:
    """The 0/1 matrix summing the targets that share a label, e.g. the districts of each state.

    Args:
      labels: one label per fine target, length m (use None for a target that belongs to no
        aggregate).

    Returns:
      ``(A, keys)``: ``A`` of shape (len(keys), m) with ``A[k, i] = 1`` when target i has label
      ``keys[k]``; ``keys`` are the distinct labels, sorted naturally: numerically when every
      label is a number (1, 2, 10), else by their text.

    Example:
      >>> from l0jax import aggregation_matrix
      >>> A, states = aggregation_matrix(["CA", "CA", "NY"])   # A @ district_totals -> state totals
      >>> states, A.toarray().tolist()
      (['CA', 'NY'], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    """
    labels = list(labels)
    if not labels:
        raise ValueError("labels must name the aggregate of each target; got an empty list.")
    distinct = {lab for lab in labels if lab is not None}
    numeric = all(isinstance(k, numbers.Real) for k in distinct)
    keys = sorted(distinct, key=float if numeric else str)
    index = {k: i for i, k in enumerate(keys)}
    cols = [j for j, lab in enumerate(labels) if lab is not None]
    rows = [index[labels[j]] for j in cols]
    A = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(keys), len(labels)))
    return A, keys


def aggregate_terms(aggregates: Any, m: int, dtype: DTypeLike = jnp.float32) -> tuple[AggregateTerm, ...]:
    """Checks ``aggregates`` (a list of ``(A, aggregate_targets, lambda)``) and builds their terms.

    Args:
      aggregates: a sequence of triples ``(A, t, lam)``: ``A`` of shape (k, m) (scipy sparse or
        dense), ``t`` of shape (k,), ``lam >= 0``.
      m: number of targets (rows of M).
      dtype: float dtype of the arrays.

    Returns:
      One ``AggregateTerm`` per triple, named ``"aggregate_<i>"``.

    Raises:
      ValueError: not a list of triples, shapes that do not match, NaN/inf, negative lambda.
    """
    if aggregates is None:
        return ()
    if (
        isinstance(aggregates, tuple)
        and len(aggregates) == 3
        and not isinstance(aggregates[0], (tuple, list))
    ):
        raise ValueError(
            "aggregates must be a list of (A, aggregate_targets, lambda) triples; wrap a single "
            "triple in a list: aggregates=[(A, t, lam)]."
        )
    terms = []
    for i, item in enumerate(aggregates):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(
                f"aggregates[{i}] must be a triple (A, aggregate_targets, lambda), got {type(item).__name__}"
                f"{' of length ' + str(len(item)) if isinstance(item, (tuple, list)) else ''}."
            )
        A, t, lam = item
        shape = getattr(A, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != m:
            raise ValueError(
                f"aggregates[{i}][0] (A) must have shape (k, {m}): one column per target of M, "
                f"got shape {shape}."
            )
        t = np.asarray(t, np.float64).reshape(-1) if np.ndim(t) else np.asarray([t], np.float64)
        if t.shape != (shape[0],):
            raise ValueError(
                f"aggregates[{i}][1] (aggregate targets) must have shape ({shape[0]},), one per row "
                f"of A, got {t.shape}."
            )
        checks.check_finite(f"aggregates[{i}][1]", t)
        checks.check_nonnegative(
            f"aggregates[{i}][2]", lam, hint="It is the strength of this aggregate penalty."
        )
        # A is small next to M (aggregates x targets): dense unless it has millions of entries.
        backend = "dense" if shape[0] * shape[1] <= 1 << 22 else "auto"
        op = as_operator(A, backend=backend, dtype=dtype, name=f"aggregates[{i}][0]")
        terms.append(
            AggregateTerm(op, jnp.asarray(t, dtype), jnp.asarray(lam, jnp.float32), f"aggregate_{i}")
        )
    return tuple(terms)


def aggregate_errors(aggregates: Any, predictions: np.ndarray) -> list[np.ndarray]:
    """Relative errors ``(A @ predictions - t) / |t|`` of each aggregation level, for reports.

    Args:
      aggregates: the list of ``(A, t, lambda)`` triples given to the fit.
      predictions: ``M @ w``, shape (m,).

    Returns:
      One array of shape (k,) per level (aggregates with ``t = 0`` get the absolute error).
    """
    out = []
    pred = np.asarray(predictions, np.float64)
    for A, t, _ in aggregates:
        estimate = np.asarray(A @ pred, np.float64).reshape(-1)
        out.append(relative_error(estimate, np.asarray(t, np.float64).reshape(-1)))
    return out
