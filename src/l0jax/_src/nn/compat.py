"""l0-python's method names on the data gates, kept apart from the native API.

Code ported from l0-python (``import l0``) calls ``gate.get_gates()``, ``gate.apply_gates(x, dim)``,
``gate.get_penalty()``, ``gate.get_active_indices()`` and ``gate.get_feature_importance()``. Each is
an alias of a native method (``gate()``, ``apply``, ``penalty``, ``active_indices``,
``feature_importance``), with the same arguments, the same results and no behaviour of its own.
The mixins below give them to ``L0Gate`` (and so ``SampleGate``), ``FeatureGate`` and
``HybridGate``; docs/migration.md lists them as l0-python aliases.
"""

from __future__ import annotations

from typing import Protocol

import jax

from l0jax._src.nn.gate import RngsLike

Array = jax.Array


class _HasPenalty(Protocol):
    def penalty(self) -> Array: ...


class _Selector(_HasPenalty, Protocol):
    def __call__(self, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array: ...

    def apply(
        self, x: Array, axis: int = 0, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array: ...

    def active_indices(
        self, threshold: float = 0.5, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array: ...


class _Ranker(Protocol):
    def feature_importance(self) -> Array: ...


class PenaltyAlias:
    """l0-python's ``get_penalty()``, the alias of ``penalty()`` (``HybridGate``)."""

    def get_penalty(self: _HasPenalty) -> Array:
        """Alias of ``penalty()`` (l0-python's name): expected number of open gates."""
        return self.penalty()


class SelectorAliases(PenaltyAlias):
    """l0-python's names for the methods of an item-selecting gate (``L0Gate`` and subclasses)."""

    def get_gates(self: _Selector, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """Alias of ``__call__`` (l0-python's name).

        Args:
          deterministic: overrides the mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's noise.

        Returns:
          The gates, shape (size,), in [0, 1].
        """
        return self(deterministic=deterministic, rngs=rngs)

    def apply_gates(
        self: _Selector, x: Array, dim: int = 0, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array:
        """Alias of ``apply(x, axis=dim)`` (l0-python's name).

        Args:
          x: any array with ``size`` entries on axis ``dim``.
          dim: the gated axis (negative counts from the end).
          deterministic: overrides the mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's noise.

        Returns:
          ``x`` scaled by the gates, same shape.
        """
        return self.apply(x, dim, deterministic=deterministic, rngs=rngs)

    def get_active_indices(
        self: _Selector, threshold: float = 0.5, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array:
        """Alias of ``active_indices`` (l0-python's name).

        Args:
          threshold: gate value in [0, 1).
          deterministic: overrides the mode (False draws a fresh sample of gates).
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          Sorted int32 indices, shape (k,).
        """
        return self.active_indices(threshold, deterministic=deterministic, rngs=rngs)


class FeatureImportanceAlias:
    """l0-python's ``get_feature_importance()``, the alias of ``feature_importance()`` (``FeatureGate``)."""

    def get_feature_importance(self: _Ranker) -> Array:
        """Alias of ``feature_importance`` (l0-python's name)."""
        return self.feature_importance()
