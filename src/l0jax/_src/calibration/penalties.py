"""Extra terms of the calibration objective, beyond the data loss and the L0/L2 penalties.

A term is a registered pytree (its arrays, including its ``strength``, are traced, so changing a
strength never recompiles) with a static ``name`` and a method ``value(weights, predictions)``
giving the unweighted penalty as a scalar. ``model.objective`` and the polish add
``strength * value`` for each term of ``Problem.terms``; the terms are built by
``distance.distance_term`` (closeness to the design weights) and ``hierarchy.aggregate_term``
(errors of aggregates of the targets).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


class PenaltyTerm:
    """Base of the extra objective terms: ``strength * value(weights, predictions)``.

    Attributes:
      name: a static label (the key of the term in the objective's terms and in diagnostics).
      strength: a float32 scalar array, >= 0.
    """

    name: str
    strength: Array

    def value(self, weights: Array, predictions: Array) -> Array:  # pragma: no cover - abstract
        """The unweighted penalty.

        Args:
          weights: gated household weights, shape (n,).
          predictions: ``M @ weights``, shape (m,).

        Returns:
          A scalar.
        """
        raise NotImplementedError


def extra_penalty(
    terms: Sequence[PenaltyTerm], weights: Array, predictions: Array
) -> tuple[Array, dict[str, Array]]:
    """``sum_t strength_t * value_t`` over ``terms``, and the unweighted values by name.

    Args:
      terms: the ``Problem.terms`` (may be empty).
      weights: gated household weights, shape (n,).
      predictions: ``M @ weights``, shape (m,).

    Returns:
      ``(total, {name: value})``; ``total`` is a float32 zero without terms.
    """
    values = {t.name: t.value(weights, predictions) for t in terms}
    total = jnp.zeros((), predictions.dtype)
    for t in terms:
        total = total + t.strength.astype(predictions.dtype) * values[t.name]
    return total, values
