"""Data losses of survey calibration, and the per-target weights of l0-python's target groups.

Every loss is a weighted sum of squared scaled residuals,

    data_loss = sum_i  weight_i * ((prediction_i - target_i) * scale_i) ** 2,

so the loss type only decides the per-target ``scale`` (computed once, on the host) and the compiled
fit is the same for all of them:

* ``"mse"``: ``scale = 1`` (l0-python's ``loss_type="mse"``).
* ``"relative"``: ``scale = 1 / (target + 1)`` (l0-python's ``loss_type="relative"``); the +1 keeps
  zero targets defined but a target of -1 divides by zero (rejected) and negative targets get an
  odd scale.
* ``"relative_abs"``: ``scale = 1 / (|target| + 1)``: the same as ``"relative"`` for targets >= 0,
  and well defined for zero and negative targets (net incomes, balances).

The weights are all ones without groups. With ``target_groups`` they follow l0-python:
``normalize_groups=True`` gives each target ``1 / (size of its group)`` so every group counts
once, and ``group_multipliers`` ({group id: factor}) multiply the weights of their groups after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from l0jax._src import checks

Array = jax.Array
LossType = Literal["mse", "relative", "relative_abs"]
"""The calibration loss: squared error, squared relative error, or absolute relative error."""
LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)


def target_scale(targets: np.ndarray, loss_type: LossType) -> np.ndarray:
    """The per-target factor that turns a residual into the loss's scaled residual.

    Args:
      targets: target values, shape (m,), finite.
      loss_type: ``"mse"``, ``"relative"`` or ``"relative_abs"``.

    Returns:
      ``scale`` of shape (m,), float64: 1, ``1 / (y + 1)`` or ``1 / (|y| + 1)``.

    Raises:
      ValueError: unknown ``loss_type``, or a target of exactly -1 with ``"relative"``.
    """
    checks.check_choice("loss_type", loss_type, LOSS_TYPES)
    y = np.asarray(targets, dtype=np.float64)
    if loss_type == "mse":
        return np.ones_like(y)
    if loss_type == "relative":
        zero = np.flatnonzero(y + 1.0 == 0.0)
        if zero.size:
            raise ValueError(
                f"loss_type='relative' divides by (target + 1), which is zero for the target(s) at "
                f"index {zero[:5].tolist()} (value -1); use loss_type='relative_abs', which divides by "
                f"(|target| + 1)."
            )
        return 1.0 / (y + 1.0)
    return 1.0 / (np.abs(y) + 1.0)


def group_weights(
    target_groups: Any,
    num_targets: int,
    *,
    normalize_groups: bool = True,
    group_multipliers: Mapping[Any, float] | None = None,
) -> np.ndarray:
    """Per-target loss weights from target groups, as l0-python's ``fit`` computes them.

    Args:
      target_groups: integer group id of each target, shape (m,), or None (all weights 1).
      num_targets: m, the number of targets.
      normalize_groups: give every target ``1 / size of its group`` so each group counts once.
      group_multipliers: {group id: factor >= 0} applied after the normalisation; requires
        ``target_groups``.

    Returns:
      Weights of shape (m,), float64.

    Raises:
      ValueError: multipliers without groups ("group_multipliers requires target_groups to be
        set"), a multiplier key that is no group ("group_multipliers key 99 not found in
        target_groups"), groups of the wrong shape or not integers, negative or non-finite factors.
    """
    if group_multipliers is not None and target_groups is None:
        raise ValueError("group_multipliers requires target_groups to be set (one group id per target).")
    if target_groups is None:
        return np.ones(num_targets)
    groups = np.asarray(target_groups)
    if groups.shape != (num_targets,):
        raise ValueError(
            f"target_groups must have shape ({num_targets},), one group id per target, got shape {groups.shape}."
        )
    if groups.dtype.kind == "f":
        if not np.all(np.isfinite(groups)) or not np.all(groups == np.round(groups)):
            raise ValueError("target_groups must hold integer group ids; got non-integer values.")
        groups = groups.astype(np.int64)
    elif groups.dtype.kind not in "iub":
        raise ValueError(f"target_groups must hold integer group ids, got dtype {groups.dtype}.")
    weights = np.ones(num_targets)
    if normalize_groups:
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
    for gid, mult in (group_multipliers or {}).items():
        mask = groups == gid
        if not mask.any():
            raise ValueError(f"group_multipliers key {gid} not found in target_groups.")
        checks.check_nonnegative(f"group_multipliers[{gid!r}]", float(mult))
        weights[mask] *= float(mult)
    return weights


def data_loss(predictions: Array, targets: Array, scale: Array, weights: Array) -> Array:
    """``sum_i weights_i * ((predictions_i - targets_i) * scale_i) ** 2``.

    Args:
      predictions: ``M @ w``, shape (m,).
      targets: shape (m,).
      scale: from ``target_scale``, shape (m,).
      weights: from ``group_weights``, shape (m,).

    Returns:
      A scalar.
    """
    residual = (predictions - targets) * scale
    return jnp.sum(weights * jnp.square(residual))


def relative_errors(predictions: Array, targets: Array) -> Array:
    """``|prediction - target| / (|target| + 1)``: l0-python's progress metric, defined for any target.

    Args:
      predictions: shape (m,).
      targets: shape (m,).

    Returns:
      Non-negative relative errors, shape (m,).
    """
    return jnp.abs(predictions - targets) / (jnp.abs(targets) + 1.0)
