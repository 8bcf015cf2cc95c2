"""Closeness to the design weights: the distance functions of classical calibration as a penalty.

Calibration estimators (Deville & Saerndal 1992) choose weights ``w`` close to the design weights
``d`` under the constraints ``M @ w = y``. Two distances cover the textbook methods:

* ``"chi2"`` (linear calibration, GREG): ``sum_j (w_j - d_j)^2 / (2 d_j)``;
* ``"raking"`` (Kullback-Leibler, raking ratio): ``sum_j w_j log(w_j / d_j) - w_j + d_j``.

Here the distance is added to the objective with a ``strength``, divided by ``sum_j d_j`` so the
strength is dimensionless (the distance becomes about half the mean squared relative change of
the weights). With a strength small against the data loss and no L0 term, the minimiser is the
textbook calibration up to a relative error of the order of the strength (the residual of a
quadratic penalty method), which ``tests/calibration/test_oracles.py`` checks against R survey's published
results. With gates, the distance is measured on the gated weights, so a household whose gate
closes pays its full distance ``d_j / 2`` (chi2) or ``d_j`` (raking).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks
from l0jax._src.calibration.penalties import PenaltyTerm

Array = jax.Array
Distance = Literal["chi2", "raking"]
"""The distance of the weights from the design weights."""
DISTANCES: tuple[Distance, ...] = get_args(Distance)


@jax.tree_util.register_pytree_node_class
class DistanceTerm(PenaltyTerm):
    """``strength * D(w, d) / sum(d)`` for the chi-square or the raking distance ``D``.

    Args:
      design: the design (initial) weights ``d``, shape (n,), all > 0.
      kind: ``"chi2"`` or ``"raking"``.
      strength: the multiplier of the term, >= 0.
      mask: None, or the real households of a sharded run (the padding, with ``d = 1``, is left
        out of the sum; ``sharded`` builds it).
    """

    name = "distance"

    def __init__(
        self,
        design: Array,
        kind: Distance,
        strength: Array,
        *,
        _log_design: Array | None = None,
        _inv_total: Array | None = None,
        mask: Array | None = None,
    ):
        self.design = design
        self.kind: Distance = kind
        self.strength = strength
        self.mask = mask
        self.log_design = jnp.log(design) if _log_design is None else _log_design
        self.inv_total = 1.0 / jnp.sum(design) if _inv_total is None else _inv_total

    def sharded(self, layout: Any, mask: Array) -> DistanceTerm:
        """The term over a sharded run's padded households (``sharding.Layout``): design weights padded
        with 1, the total of the real ones kept, the padding masked out.
        """
        design = layout.put_households(np.asarray(self.design), fill=1.0)
        return DistanceTerm(
            design,
            self.kind,
            layout.put_replicated(np.asarray(self.strength)),
            _log_design=layout.put_households(np.asarray(self.log_design), fill=0.0),
            _inv_total=layout.put_replicated(np.asarray(self.inv_total)),
            mask=mask,
        )

    def value(self, weights: Array, predictions: Array) -> Array:
        """The normalised distance ``D(w, d) / sum(d)``, a scalar (see the module docstring)."""
        del predictions
        w, d = weights, self.design
        if self.kind == "chi2":
            per = jnp.square(w - d) / d
            total = (
                jnp.sum(per if self.mask is None else jnp.where(self.mask, per, jnp.zeros((), per.dtype)))
                * 0.5
            )
        else:
            # w log(w/d) - w + d, equal to d at w = 0; the inner where keeps the gradient finite there.
            positive = w > 0
            log_w = jnp.log(jnp.where(positive, w, 1.0))
            per = jnp.where(positive, w * (log_w - self.log_design) - w + d, d)
            total = jnp.sum(per if self.mask is None else jnp.where(self.mask, per, jnp.zeros((), per.dtype)))
        return total * self.inv_total

    def tree_flatten(self):
        return (self.design, self.strength, self.log_design, self.inv_total, self.mask), self.kind

    @classmethod
    def tree_unflatten(cls, kind, children):
        design, strength, log_design, inv_total, mask = children
        return cls(design, kind, strength, _log_design=log_design, _inv_total=inv_total, mask=mask)


def distance_term(
    kind: Distance, design_weights: ArrayLike | None, n: int, strength: float, dtype: DTypeLike = jnp.float32
) -> DistanceTerm:
    """Checks the arguments and builds the distance term.

    Args:
      kind: ``"chi2"`` or ``"raking"``.
      design_weights: the initial weights: None (all ones), a scalar or an array of shape (n,); > 0.
      n: number of households.
      strength: the multiplier, >= 0 (``distance_strength``).
      dtype: float dtype of the term's arrays.

    Returns:
      A ``DistanceTerm``.

    Raises:
      ValueError: unknown kind, a negative strength, or design weights that are not all > 0.
    """
    checks.check_choice("distance", kind, DISTANCES)
    checks.check_nonnegative(
        "distance_strength",
        strength,
        hint="It is the multiplier of the distance to the initial weights, e.g. 1e-3.",
    )
    if design_weights is None:
        d = np.ones(n)
    else:
        d = np.asarray(design_weights, np.float64)
        d = np.full(n, float(d)) if d.ndim == 0 else d
    if d.shape != (n,):
        raise ValueError(f"init_weights array must have shape ({n},), got {d.shape}.")
    checks.check_finite("init_weights", d)
    if not np.all(d > 0):
        bad = np.flatnonzero(~(d > 0))
        raise ValueError(
            f"distance={kind!r} measures closeness to init_weights, which must then be > 0, but "
            f"{bad.size} household(s) have a weight <= 0 (first at index {bad[:5].tolist()}); give them a "
            f"small positive design weight or drop them from M."
        )
    return DistanceTerm(jnp.asarray(d, dtype), kind, jnp.asarray(strength, jnp.float32))
