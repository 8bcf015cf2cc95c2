"""Prune to a chosen size: a Lagrangian budget on the expected size, with multipliers set by dual ascent.

Instead of a penalty weight ``lambda`` whose effect on the final size is found by search, the
training objective carries a constraint ``E = T``: the expected size ``E`` of the model (open
parameters, open gates or FLOPs per example, any differentiable function of the gate logits)
should equal the target ``T``. Following CoFi (Xia, Zhong & Chen 2022), the constraint enters the
loss as the Lagrangian term

    penalty = lambda1 * g + lambda2 * g**2,      g = (E - T_t) / T_t,

which training minimises over the model while the multipliers ``(lambda1, lambda2)`` are
*maximised*: after every step they take a step of gradient ascent on the same term,
``lambda1 += rate * g`` and ``lambda2 += rate * g**2``. While the model is larger than the target
``lambda1`` grows and pushes the gates closed; when it has become smaller ``lambda1`` falls (it
may turn negative, reopening gates); ``lambda2`` only grows, a restoring force that damps the
oscillation of the linear multiplier around the target. The gap is measured as a fraction of the
target, so one ``rate`` fits models of any size and small targets alike (measured as a fraction
of the full size, a 10% target saw a gap ten times smaller than a 50% one and its multiplier
wound up during the descent, then took hundreds of steps to unwind: 12% below the target after
1,000 Adam steps, against 0.1% with the relative gap).

``T_t`` warms up: it falls geometrically (linearly in ``log(T + 1)``) from ``total`` to ``T``
over ``warmup`` steps, so the data shape the gates before the budget bites and the multipliers
follow a moving target instead of winding up against a distant one; the calibration
engine's keep-K controller anneals its household budget with the same schedule
(``annealed_log_target``).

Everything here is a pure function of a ``BudgetState`` pytree (the multipliers and the step):
it jits, it works in any training loop (Flax, Equinox, plain JAX), and the target, total, rate
and warmup are traced values, so changing the target never recompiles. ``l0jax.nn.SizeBudget``
packages it for Flax NNX models.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l0jax._src import checks

Array = jax.Array


class BudgetState(NamedTuple):
    """The budget controller's state: the two Lagrange multipliers and the step.

    Attributes:
      lambda1: multiplier of the linear term, a float32 scalar (any sign).
      lambda2: multiplier of the quadratic term, a float32 scalar (>= 0, never decreases).
      step: number of updates so far, an int32 scalar (drives the warm-up of the target).
    """

    lambda1: Array
    lambda2: Array
    step: Array


def budget_init(lambda1: float = 0.0, lambda2: float = 0.0) -> BudgetState:
    """The controller's state before training: both multipliers at zero (no pressure yet).

    Args:
      lambda1: initial linear multiplier.
      lambda2: initial quadratic multiplier, >= 0.

    Returns:
      A ``BudgetState`` of float32/int32 scalars.
    """
    checks.check_nonnegative("lambda2", lambda2)
    return BudgetState(
        jnp.asarray(lambda1, jnp.float32), jnp.asarray(lambda2, jnp.float32), jnp.zeros((), jnp.int32)
    )


def check_target(target: ArrayLike, total: ArrayLike, *, name: str = "target") -> None:
    """Raises ValueError unless ``0 < target <= total`` (skipped for traced values).

    Args:
      target: the target size.
      total: the size with every gate open.
      name: the argument name used in the message.
    """
    t, n = checks.concrete(target), checks.concrete(total)
    if t is None:
        return
    if t.shape != () or not np.isfinite(t) or not t > 0 or (n is not None and not t <= n):
        limit = f"{float(n):g}" if n is not None else "total"
        raise ValueError(
            f"{name} must be a number in (0, total] with total = {limit} (the size with every gate "
            f"open), got {target!r}; pass a count, not a fraction, or scale the fraction by total."
        )


def annealed_log_target(start: ArrayLike, target: ArrayLike, step: ArrayLike, steps: ArrayLike) -> Array:
    """``log(T_t + 1)`` for a target falling geometrically from ``start`` to ``target`` over ``steps``.

    Linear interpolation of ``log(x + 1)``: early steps remove a constant fraction of what is left,
    so a small target is approached gently. From step ``steps`` on (from the first step when
    ``steps <= 0``) it is ``log(target + 1)``.

    Args:
      start: the size at step 0 (scalar).
      target: the final target (scalar).
      step: the current step (scalar, any numeric dtype).
      steps: length of the warm-up (scalar).

    Returns:
      A float32 scalar.
    """
    steps = jnp.asarray(steps, jnp.float32)
    positive = steps > 0
    frac = jnp.minimum(jnp.asarray(step).astype(jnp.float32) / jnp.where(positive, steps, 1.0), 1.0)
    frac = jnp.where(positive, frac, 1.0)
    start = jnp.asarray(start, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    return (1.0 - frac) * jnp.log(start + 1.0) + frac * jnp.log(target + 1.0)


def budget_target(state: BudgetState, target: ArrayLike, *, total: ArrayLike, warmup: ArrayLike = 0) -> Array:
    """The target in force at ``state.step``: ``T_t``, from ``total`` down to ``target`` over ``warmup``.

    Args:
      state: the controller's state.
      target: the final target size T, in (0, total].
      total: the size with every gate open.
      warmup: steps of the geometric warm-up (0: the target applies from the first step).

    Returns:
      A float32 scalar.
    """
    check_target(target, total)
    return jnp.expm1(annealed_log_target(total, target, state.step, warmup))


def budget_gap(
    state: BudgetState, expected: Array, target: ArrayLike, *, total: ArrayLike, warmup: ArrayLike = 0
) -> Array:
    """``g = (E - T_t) / T_t``: how far the expected size is above (> 0) or below the target, relatively.

    Args:
      state: the controller's state.
      expected: the expected size E (a scalar, differentiable in the gate logits).
      target: the final target T, in (0, total].
      total: the size with every gate open (> 0).
      warmup: steps of the target's warm-up.

    Returns:
      A float32 scalar.
    """
    checks.check_positive("total", total)
    t = budget_target(state, target, total=total, warmup=warmup)
    return (jnp.asarray(expected, jnp.float32) - t) / t


def budget_penalty(
    state: BudgetState, expected: Array, target: ArrayLike, *, total: ArrayLike, warmup: ArrayLike = 0
) -> Array:
    """The Lagrangian term ``lambda1 * g + lambda2 * g**2`` to add to the training loss.

    Its gradient flows into ``expected`` (the gate logits), not into the multipliers, which
    ``budget_update`` moves by ascent.

    Args:
      state: the controller's state.
      expected: the expected size E, shape ``()``.
      target: the final target size T, in (0, total].
      total: the size with every gate open.
      warmup: steps of the target's warm-up.

    Returns:
      A float32 scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> import l0jax
      >>> state = l0jax.budget_init()
      >>> state = l0jax.budget_update(state, jnp.float32(800.0), 500.0, total=1000.0, rate=1.0)
      >>> round(float(state.lambda1), 4), round(float(state.lambda2), 4)     # gap 0.6: 0.6, 0.6 ** 2
      (0.6, 0.36)
      >>> round(float(l0jax.budget_penalty(state, jnp.float32(600.0), 500.0, total=1000.0)), 4)
      0.1344
    """
    lam1 = jax.lax.stop_gradient(state.lambda1)
    lam2 = jax.lax.stop_gradient(state.lambda2)
    g = budget_gap(state, expected, target, total=total, warmup=warmup)
    return lam1 * g + lam2 * g * g


def budget_update(
    state: BudgetState,
    expected: Array,
    target: ArrayLike,
    *,
    total: ArrayLike,
    rate: ArrayLike = 1.0,
    warmup: ArrayLike = 0,
) -> BudgetState:
    """One step of dual ascent: ``lambda1 += rate * g``, ``lambda2 += rate * g**2``, ``step += 1``.

    These are the gradients of ``budget_penalty`` with respect to the multipliers, so the pair is
    the maximisation half of CoFi's min-max Lagrangian. Call it once per training step, with the
    expected size of the model before or after that step.

    Args:
      state: the controller's state.
      expected: the expected size E, shape ``()`` (its gradient is not used).
      target: the final target size T, in (0, total].
      total: the size with every gate open.
      rate: the ascent step of the multipliers (> 0), per unit of relative gap.
      warmup: steps of the target's warm-up.

    Returns:
      The new ``BudgetState``.
    """
    checks.check_positive("rate", rate)
    g = jax.lax.stop_gradient(budget_gap(state, expected, target, total=total, warmup=warmup))
    rate = jnp.asarray(rate, jnp.float32)
    return BudgetState(state.lambda1 + rate * g, state.lambda2 + rate * g * g, state.step + 1)
