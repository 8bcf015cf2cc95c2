"""Gates that select data rather than weights: items, samples, features, and a hybrid selector.

l0-python's ``L0Gate``, ``SampleGate``, ``FeatureGate`` and ``HybridGate`` with their semantics
(an item is selected when its gate value exceeds ``threshold``) and these bugs fixed:

* Selections follow the module's mode. In eval mode (``deterministic=True``, ``model.eval()``,
  ``nnx.view``) they use the deterministic gates, so the same state gives the same selection.
  l0-python modules start in training mode, so its "active indices" were a fresh random draw on
  every call.
* Degenerate sizes raise ``ValueError`` saying why (l0-python divided by zero or took ``log(0)``:
  ``SampleGate(n, n)``, ``SampleGate(n, 0)``, ``FeatureGate(n, 0)``, ``HybridGate(l0_fraction=0)``),
  and ``HybridGate(target_items=0)`` is an error instead of silently meaning 20%.
* ``FeatureGate`` returns at most ``max_features`` features (l0-python never enforced the cap).
* ``SampleGate.select_weighted_samples`` selects by gate, not by ``weight * gate > 1e-8``, which
  silently dropped samples with zero or negative weights.
* ``HybridGate``'s two shares add up to ``target_items`` when the fractions sum to 1 (l0-python
  floored each, so 10 items at 0.25/0.75 became 2 + 7).
* ``HybridGate.select`` takes an explicit key; l0-python called ``torch.manual_seed``, resetting
  the global generator of the whole process.

Selections return arrays whose size depends on the gate values, so they run eagerly (not under
``jit``); training the gates (``__call__``, ``penalty``, ``count_loss``) is jittable.

l0-python's method names (``get_gates``, ``apply_gates``, ``get_penalty``, ``get_active_indices``,
``get_feature_importance``) are aliases of the native ones, mixed in from ``compat``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import rnglib

from l0jax._src import checks
from l0jax._src.nn.compat import FeatureImportanceAlias, PenaltyAlias, SelectorAliases
from l0jax._src.nn.gate import (
    GateConfig,
    GateKeywords,
    GateKeywordsWithoutKeep,
    HardConcreteGate,
    RngsLike,
    resolve_gate_config,
)

Array = jax.Array


def _check_axis_size(name: str, x: Any, axis: int, size: int, what: str) -> None:
    shape = np.shape(x)
    if len(shape) == 0 or not -len(shape) <= axis < len(shape) or shape[axis] != size:
        raise ValueError(f"{name} of shape {shape} must have {size} {what} on axis {axis}.")


def _indices_above(z: Array, threshold: float) -> Array:
    """Sorted int32 indices of the gates above ``threshold``; eager, as the size depends on ``z``."""
    return jnp.asarray(np.flatnonzero(np.asarray(z) > threshold), jnp.int32)


def _count(name: str, value: Any, minimum: int = 1) -> int:
    return checks.check_int_at_least(name, value, minimum)


class L0Gate(HardConcreteGate, SelectorAliases):
    """A vector of ``size`` hard-concrete gates for selecting items (rows, features, ...).

    Example:
      >>> import jax.numpy as jnp
      >>> from l0jax.nn import L0Gate
      >>> gate = L0Gate(4, init_keep_prob=0.9, deterministic=True)
      >>> gate.apply(jnp.ones((3, 4)), axis=1).shape
      (3, 4)

    Args:
      size: number of items.
      gate_config: the gate hyperparameters (``GateConfig``); default ``L0Gate.gate_defaults``,
        which is ``GateConfig(temperature=0.5)`` (l0-python's temperature).
      rngs: ``nnx.Rngs`` for the jitter and the gate noise.
      **gate_keywords: any field of ``GateConfig`` (``temperature``, ``init_keep_prob`` (l0-python's
        ``init_mean``), ``init_jitter``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``. An ``init_jitter`` > 0
        breaks the symmetry between items so that training can tell them apart (needs ``rngs``).
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig(temperature=0.5)

    def __init__(
        self,
        size: int,
        *,
        gate_config: GateConfig | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
        **gate_keywords: Unpack[GateKeywords],
    ):
        self.size = _count("size", size)
        config = resolve_gate_config(self, gate_config, gate_keywords)
        super().__init__((self.size,), gate_config=config, rngs=rngs)

    def apply(
        self, x: Array, axis: int = 0, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array:
        """Multiplies ``x`` by the gates along ``axis``.

        Args:
          x: any array with ``size`` entries on ``axis``.
          axis: the gated axis (negative counts from the end).
          deterministic: overrides the mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's noise.

        Returns:
          ``x`` scaled by the gates, same shape.
        """
        x = jnp.asarray(x)
        _check_axis_size("x", x, axis, self.size, "items")
        z = self(deterministic=deterministic, rngs=rngs)
        axis = axis % x.ndim
        shape = [1] * x.ndim
        shape[axis] = self.size
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else z.dtype
        return x.astype(dtype) * z.reshape(shape).astype(dtype)

    def active_indices(
        self, threshold: float = 0.5, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array:
        """Indices of the items whose gate value exceeds ``threshold`` (l0-python's rule).

        In eval mode these are deterministic. The median-rule gate is the gate's median, so it
        exceeds 0.5 exactly when the gate is above 1/2 with probability above 1/2, i.e. when
        ``sigmoid(log_alpha / temperature) > (0.5 - gamma) / (zeta - gamma)``; for a stretch
        symmetric about 1/2 (``gamma + zeta = 1``, as the default -0.1, 1.1) that is ``log_alpha > 0``.

        Args:
          threshold: gate value in [0, 1).
          deterministic: overrides the mode (False draws a fresh sample of gates).
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          Sorted int32 indices, shape (k,).
        """
        checks.check_threshold(threshold)
        return _indices_above(self(deterministic=deterministic, rngs=rngs), threshold)


class SampleGate(L0Gate):
    """Selects about ``target_samples`` of ``n_samples`` observations (rows).

    The gates start at keep probability ``target_samples / n_samples`` (l0-python's rule,
    clipped into [1e-6, 1 - 1e-6] so that ``target_samples == n_samples`` keeps everything
    instead of dividing by zero). Add ``count_loss(z)`` (or a multiple of ``penalty()``) to the
    training loss to steer the number selected.

    Example:
      >>> from flax import nnx
      >>> from l0jax.nn import SampleGate
      >>> gate = SampleGate(100, 20, init_jitter=0.5, rngs=nnx.Rngs(0))
      >>> float(gate.count_loss(gate())) >= 0
      True

    Args:
      n_samples: number of observations, >= 1.
      target_samples: how many to select, 1 <= target_samples <= n_samples.
      gate_config: the gate hyperparameters (``GateConfig``); default ``SampleGate.gate_defaults``,
        which is ``GateConfig(temperature=0.25)`` (l0-python's). Its ``init_keep_prob`` is
        replaced by ``target_samples / n_samples``.
      rngs: ``nnx.Rngs`` for the jitter and the gate noise.
      **gate_keywords: any field of ``GateConfig`` but ``init_keep_prob`` (``temperature``,
        ``init_jitter``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
        Without ``init_jitter`` > 0 all gates are identical and an eval selection is all or nothing.
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig(temperature=0.25)

    def __init__(
        self,
        n_samples: int,
        target_samples: int,
        *,
        gate_config: GateConfig | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
        **gate_keywords: Unpack[GateKeywordsWithoutKeep],
    ):
        n = _count("n_samples", n_samples)
        target = checks.check_int_in_range(
            "target_samples",
            target_samples,
            1,
            n,
            high_name="n_samples",
            hint="a gate cannot select more rows than exist, and selecting none needs no gate.",
        )
        self.n_samples, self.target_samples = n, target
        config = resolve_gate_config(
            self, gate_config, gate_keywords, init_keep_prob=float(np.clip(target / n, 1e-6, 1 - 1e-6))
        )
        super().__init__(n, gate_config=config, rngs=rngs)

    def count_loss(self, z: Array) -> Array:
        """Squared relative miss of the selected count: ``((sum(z) - target) / target) ** 2``.

        With sampled gates its expectation is ``((E[count] - target)**2 + Var[count]) / target**2``:
        minimising it matches the expected count to the target *and* pushes each gate towards 0
        or 1 (the variance term), so the deterministic selection lands near the target.

        Args:
          z: gates of shape (n_samples,), usually sampled by ``self()``.

        Returns:
          A float32 scalar.
        """
        total = jnp.sum(jnp.asarray(z).astype(jnp.float32))
        return jnp.square((total - self.target_samples) / self.target_samples)

    def select_samples(
        self, data: Array, *, threshold: float = 0.5, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> tuple[Array, Array]:
        """Rows of ``data`` whose gate exceeds ``threshold``.

        Args:
          data: array of shape (n_samples, ...).
          threshold: gate value in [0, 1).
          deterministic: overrides the mode for this call.
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          ``(selected_data, indices)``: shapes (k, ...) and (k,).
        """
        _check_axis_size("data", data, 0, self.n_samples, "rows")
        idx = self.active_indices(threshold, deterministic=deterministic, rngs=rngs)
        return jnp.asarray(data)[idx], idx

    def select_weighted_samples(
        self,
        data: Array,
        weights: Array,
        *,
        threshold: float = 0.5,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> tuple[Array, Array, Array]:
        """Selected rows with their weights scaled by the gates.

        Rows are selected by gate (as ``select_samples``), whatever their weight: l0-python kept
        rows with ``weight * gate > 1e-8``, silently dropping zero and negative weights.

        Args:
          data: array of shape (n_samples, ...).
          weights: array of shape (n_samples,).
          threshold: gate value in [0, 1).
          deterministic: overrides the mode for this call.
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          ``(selected_data, selected_weights, indices)``: shapes (k, ...), (k,), (k,); the weights
          are ``weights * gate`` of the selected rows.
        """
        _check_axis_size("data", data, 0, self.n_samples, "rows")
        weights = jnp.asarray(weights)
        if weights.shape != (self.n_samples,):
            raise ValueError(f"weights of shape {weights.shape} must have shape ({self.n_samples},).")
        checks.check_finite("weights", weights)
        checks.check_threshold(threshold)
        # One draw of the gates serves both the selection and the weights, so in training mode
        # the weights belong to the gates that selected the rows.
        z = self(deterministic=deterministic, rngs=rngs)
        idx = _indices_above(z, threshold)
        dtype = weights.dtype if jnp.issubdtype(weights.dtype, jnp.floating) else z.dtype
        gated = weights.astype(dtype) * z.astype(dtype)
        return jnp.asarray(data)[idx], gated[idx], idx


class FeatureGate(L0Gate, FeatureImportanceAlias):
    """Selects at most ``max_features`` of ``n_features`` columns (the last axis).

    Gates start at keep probability ``min(max_features / n_features, 0.99)`` (l0-python).
    When more than ``max_features`` gates exceed the threshold, the ``max_features`` largest
    gates are kept (ties broken by ``log_alpha``, then by position).

    Example:
      >>> import jax.numpy as jnp
      >>> from l0jax.nn import FeatureGate
      >>> gate = FeatureGate(5, 2, deterministic=True)
      >>> gate.log_alpha[...] = jnp.array([1.0, -2.0, 3.0, 2.0, -1.0])  # three gates open
      >>> _, names = gate.select_features_with_names(jnp.ones((3, 5)), list("abcde"))
      >>> names                             # capped at the two largest
      ['c', 'd']

    Args:
      n_features: number of features, >= 1.
      max_features: cap on the selection, >= 1 (a cap above ``n_features`` is no cap).
      gate_config: the gate hyperparameters (``GateConfig``); default ``FeatureGate.gate_defaults``,
        which is ``GateConfig(temperature=0.1)`` (l0-python's). Its ``init_keep_prob`` is
        replaced by ``min(max_features / n_features, 0.99)``.
      rngs: ``nnx.Rngs`` for the jitter and the gate noise.
      **gate_keywords: any field of ``GateConfig`` but ``init_keep_prob`` (``temperature``,
        ``init_jitter``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig(temperature=0.1)

    def __init__(
        self,
        n_features: int,
        max_features: int,
        *,
        gate_config: GateConfig | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
        **gate_keywords: Unpack[GateKeywordsWithoutKeep],
    ):
        n = _count("n_features", n_features)
        m = _count("max_features", max_features)
        self.n_features, self.max_features = n, m
        config = resolve_gate_config(self, gate_config, gate_keywords, init_keep_prob=min(m / n, 0.99))
        super().__init__(n, gate_config=config, rngs=rngs)

    def active_indices(
        self, threshold: float = 0.5, *, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> Array:
        """Indices of features whose gate exceeds ``threshold``, at most ``max_features`` of them.

        Args:
          threshold: gate value in [0, 1).
          deterministic: overrides the mode.
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          Sorted int32 indices, shape (k,) with k <= max_features.
        """
        checks.check_threshold(threshold)
        z = np.asarray(self(deterministic=deterministic, rngs=rngs))
        idx = np.flatnonzero(z > threshold)
        if idx.size > self.max_features:
            la = np.asarray(self.log_alpha[...])[idx]
            order = np.lexsort(
                (idx, -la, -z[idx])
            )  # last key is primary: gate, then log_alpha, then position
            idx = np.sort(idx[order[: self.max_features]])
        return jnp.asarray(idx, jnp.int32)

    def select_features(
        self, data: Array, *, threshold: float = 0.5, deterministic: bool | None = None, rngs: RngsLike = None
    ) -> tuple[Array, Array]:
        """The selected columns of ``data``.

        Args:
          data: array of shape (..., n_features).
          threshold: gate value in [0, 1).
          deterministic: overrides the mode.
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          ``(selected_data, indices)``: shapes (..., k) and (k,).
        """
        _check_axis_size("data", data, -1, self.n_features, "features")
        idx = self.active_indices(threshold, deterministic=deterministic, rngs=rngs)
        return jnp.asarray(data)[..., idx], idx

    def select_features_with_names(
        self,
        data: Array,
        feature_names: Sequence[str],
        *,
        threshold: float = 0.5,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> tuple[Array, list[str]]:
        """The selected columns and their names.

        Args:
          data: array of shape (..., n_features).
          feature_names: one name per feature.
          threshold: gate value in [0, 1).
          deterministic: overrides the mode.
          rngs: key or ``nnx.Rngs`` for a sampled selection.

        Returns:
          ``(selected_data, selected_names)``.
        """
        names = list(feature_names)
        if len(names) != self.n_features:
            raise ValueError(
                f"feature_names has {len(names)} names but the gate has {self.n_features} features."
            )
        selected, idx = self.select_features(
            data, threshold=threshold, deterministic=deterministic, rngs=rngs
        )
        return selected, [names[i] for i in np.asarray(idx)]

    def feature_importance(self) -> Array:
        """P(gate != 0) of each feature (eq. 12), shape (n_features,)."""
        return self.prob_nonzero()


class HybridGate(nnx.Module, PenaltyAlias):
    """Selects items partly by a trained ``SampleGate`` and partly at random (for coverage).

    ``target_items`` is split into ``n_l0 = floor(target_items * l0_fraction)`` items for the L0
    gate and ``n_random`` drawn uniformly, without replacement, from the items the gate did not
    select. When the fractions sum to 1, ``n_random = target_items - n_l0``, so the shares add up
    to the target (l0-python floored both, so 10 items at 0.25/0.75 gave 2 + 7); when they sum to
    less, ``n_random = floor(target_items * random_fraction)``. The L0 gate selects the items whose
    gate exceeds the threshold, so it picks exactly ``n_l0`` only once trained to its target.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from l0jax.nn import HybridGate
      >>> hybrid = HybridGate(50, target_items=10, deterministic=True)
      >>> hybrid.n_l0, hybrid.n_random
      (2, 8)
      >>> rows, idx, kinds = hybrid.select(jnp.arange(50.0), jax.random.key(0))
      >>> set(kinds.tolist()) <= {"l0", "random"}
      True
      >>> int((kinds == "random").sum())   # the untrained L0 gate selects no row yet
      8

    Args:
      n_items: number of items, >= 1.
      l0_fraction: share of the target chosen by the L0 gate, in [0, 1].
      random_fraction: share chosen at random, in [0, 1]; the two sum to at most 1.
      target_items: total to select, 1 <= target_items <= n_items; None means
        ``max(1, int(0.2 * n_items))`` (l0-python's default).
      gate_config: the L0 gate's hyperparameters (``GateConfig``); default
        ``HybridGate.gate_defaults``, which is ``GateConfig(temperature=0.25)`` (l0-python's).
        Its ``init_keep_prob`` is replaced by the L0 share, as in ``SampleGate``.
      rngs: ``nnx.Rngs`` for the L0 gate's jitter and noise.
      **gate_keywords: any field of ``GateConfig`` but ``init_keep_prob`` (``temperature``,
        ``init_jitter``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig(temperature=0.25)

    def __init__(
        self,
        n_items: int,
        l0_fraction: float = 0.25,
        random_fraction: float = 0.75,
        target_items: int | None = None,
        *,
        gate_config: GateConfig | None = None,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
        **gate_keywords: Unpack[GateKeywordsWithoutKeep],
    ):
        n = _count("n_items", n_items)
        for name, frac in (("l0_fraction", l0_fraction), ("random_fraction", random_fraction)):
            checks.check_finite(name, frac)
            if not 0.0 <= float(frac) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {frac!r}.")
        if float(l0_fraction) + float(random_fraction) > 1.0 + 1e-12:
            raise ValueError(
                f"l0_fraction + random_fraction must be at most 1 (they split target_items), "
                f"got {l0_fraction} + {random_fraction}."
            )
        if target_items is None:
            target = max(1, int(n * 0.2))
        else:
            target = checks.check_int_in_range(
                "target_items",
                target_items,
                1,
                n,
                high_name="n_items",
                hint="or pass None for 20% of the items.",
            )
        self.n_items, self.target_items = n, target
        self.l0_fraction, self.random_fraction = float(l0_fraction), float(random_fraction)
        # The 1e-9 keeps products such as 100 * 0.29 = 28.999999999999996 from losing a whole item.
        self.n_l0 = math.floor(target * self.l0_fraction + 1e-9)
        if abs(self.l0_fraction + self.random_fraction - 1.0) <= 1e-9:
            # Flooring both shares separately would lose an item to rounding (10 * 0.25 + 10 * 0.75
            # gave 2 + 7): when the shares cover the whole target, the random part takes the rest.
            self.n_random = target - self.n_l0
        else:
            self.n_random = math.floor(target * self.random_fraction + 1e-9)
        # Resolved (and so checked) even when there is no L0 share and no inner gate to check it.
        keep = float(np.clip(self.n_l0 / n, 1e-6, 1 - 1e-6))  # the SampleGate's, as it will set
        config = resolve_gate_config(self, gate_config, gate_keywords, init_keep_prob=keep)
        # With no L0 share there is nothing to train: no gate rather than l0-python's log(0) crash.
        self.l0_gate = (
            SampleGate(n, self.n_l0, gate_config=config, rngs=rngs) if self.n_l0 >= 1 else nnx.data(None)
        )

    def penalty(self) -> Array:
        """Expected number of items the L0 gate keeps open (0 without an L0 share)."""
        if self.l0_gate is None:
            return jnp.zeros((), jnp.float32)
        return self.l0_gate.penalty()

    def select(
        self,
        data: Array,
        key: Array | int,
        *,
        threshold: float = 0.5,
        deterministic: bool | None = None,
    ) -> tuple[Array, Array, np.ndarray]:
        """Selects rows: those the L0 gate keeps plus a uniform draw from the rest.

        A pure function of the module's state and ``key``: the same key returns the same rows
        (in training mode the L0 gate's noise is drawn from ``key`` too).

        Args:
          data: array of shape (n_items, ...).
          key: a JAX key or an int seed for the random part (and the gate noise in training mode).
          threshold: gate value in [0, 1) above which the L0 gate selects an item.
          deterministic: overrides the L0 gate's mode.

        Returns:
          ``(selected_data, indices, kinds)``: rows (k, ...), sorted int32 indices (k,), and a
          NumPy string array (k,) of ``"l0"`` or ``"random"`` saying how each row was chosen.
        """
        _check_axis_size("data", data, 0, self.n_items, "rows")
        key = checks.as_key(key)
        gate_key, random_key = jax.random.split(key)
        if self.l0_gate is None:
            l0_idx = np.zeros((0,), np.int64)
        else:
            l0_idx = np.asarray(
                self.l0_gate.active_indices(threshold, deterministic=deterministic, rngs=gate_key)
            ).astype(np.int64)
        mask = np.ones(self.n_items, bool)
        mask[l0_idx] = False
        available = np.flatnonzero(mask)
        n_random = min(self.n_random, available.size)
        if n_random > 0:
            perm = np.asarray(jax.random.permutation(random_key, available.size))
            random_idx = available[perm[:n_random]]
        else:
            random_idx = np.zeros((0,), np.int64)
        selected = np.concatenate([l0_idx, random_idx])
        kinds = np.array(["l0"] * l0_idx.size + ["random"] * random_idx.size, dtype="<U6")
        order = np.argsort(selected, kind="stable")
        idx = jnp.asarray(selected[order], jnp.int32)
        return jnp.asarray(data)[idx], idx, kinds[order]
