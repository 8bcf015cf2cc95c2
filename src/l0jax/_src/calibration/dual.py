"""Keep K households: dual ascent on the constraint "active households = K".

The fit minimises the data loss (plus the L0/L2 terms) subject to a budget on the number of open
gates. The budget's Lagrange multiplier ``nu`` enters as an offset of every gate logit,
``log_alpha_j - nu``: a uniform pressure that closes the gates the data need least (those with the
lowest logits) and, when the count falls below K, reopens the best closed ones. After every
optimizer step the multiplier takes a dual-ascent step driven by the error

    e = log(count + 1) - log(K_t + 1) + horizon * trend,

where ``count`` is the deterministic active count (what the fit returns), ``trend`` the change of
``log(E[L0] + 1)`` over the step (``E[L0] = sum_j P(z_j != 0)``, smooth; a look-ahead that damps
overshoot), and ``K_t`` a budget that falls geometrically from all households to K over the first
``anneal`` epochs, then stays at K. The step is proportional-integral,

    integral <- clip(integral + integral_rate * e, +-integral_limit),   nu <- nu + rate * e + integral,

the integral part cancelling the steady pull of the data on the gates (without it the count
settles about 14% below K on the census). The offset is applied by shifting the logits by the step
of ``nu``, so the state carries only the integral (``CalibrationState.dual``).

At the end of training the multiplier takes its final value, the offset that opens exactly K
gates (the K largest logits; ``snap_to_budget``): the dual ascent has brought the count within a
few percent of K, where it jitters as gates near the threshold flip with each epoch's noise, and
this last step meets the constraint exactly before the polish refits the kept weights.

Why an offset and not ``lambda_l0``: under Adam every coordinate moves at about the learning rate
whatever the size of its gradient, so a gate the data barely need closes at full speed as soon
as ``lambda_l0 > 0``, however small, and a closed gate gets no gradient to reopen; adapting the
multiplier of the L0 term therefore overshoots K and cannot come back (measured: from 57,867
census households to 256 for K = 1,000, with lambda_l0 decaying to 1e-20 and no gate reopening).
The offset acts in the units Adam moves the logits in, and can be negative. ``lambda_l0`` keeps
its meaning (the cost per expected open gate) and defaults to 0 in keep-K mode.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.budget import annealed_log_target
from l0jax._src.calibration.model import HyperParams, Params

Array = jax.Array


class ActiveBudget(NamedTuple):
    """The constraint and the controller's settings, float32 scalars (traced: changing K never recompiles).

    Attributes:
      target: K, the number of households to keep (> 0).
      rate: proportional gain, in logit units per unit of log(signal / K_t).
      integral_rate: integral gain (per epoch), which removes the steady offset left by the pull of
        the data on the gates.
      integral_limit: bound of the integral term, in logit units per epoch (anti-windup).
      horizon: epochs of look-ahead along the trend of the expected count.
      anneal: epochs over which the budget falls geometrically from all households to K.
    """

    target: Array
    rate: Array
    integral_rate: Array
    integral_limit: Array
    horizon: Array
    anneal: Array


def make_budget(
    target: float,
    *,
    rate: float = 0.05,
    integral_rate: float = 0.005,
    integral_limit: float = 0.05,
    horizon: float = 20.0,
    anneal: float = 1.0,
) -> ActiveBudget:
    """Packs the budget as float32 scalars (see ``ActiveBudget``)."""
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return ActiveBudget(
        f(target), f(rate), f(integral_rate), f(integral_limit), f(horizon), f(max(anneal, 1.0))
    )


class DualState(NamedTuple):
    """The controller's memory, carried in ``CalibrationState.dual``.

    Attributes:
      integral: the integral term, a float32 scalar (logit units per epoch).
    """

    integral: Array


def init_dual() -> DualState:
    """The controller's state before the first epoch."""
    return DualState(integral=jnp.zeros((), jnp.float32))


def resolve_target_active(target_active: float | int, n: int) -> int:
    """K from ``target_active``: an integer count in [1, n], or a fraction strictly inside (0, 1).

    Args:
      target_active: an int (the number of households to keep) or a float in (0, 1) (a fraction of
        the ``n`` households).
      n: number of households.

    Returns:
      K as an int in [1, n].

    Raises:
      ValueError: anything else, with the accepted forms.
    """
    if isinstance(target_active, bool):
        raise ValueError(
            f"target_active must be a count (int) or a fraction in (0, 1), got {target_active!r}."
        )
    if isinstance(target_active, (int, np.integer)):
        k = int(target_active)
        if not 1 <= k <= n:
            raise ValueError(
                f"target_active must be a count between 1 and the number of households ({n}), "
                f"got {k}; pass a float in (0, 1) for a fraction."
            )
        return k
    if isinstance(target_active, (float, np.floating)) and 0.0 < float(target_active) < 1.0:
        return max(1, int(round(float(target_active) * n)))
    raise ValueError(
        f"target_active must be a count (an int between 1 and {n}) or a fraction (a float strictly "
        f"between 0 and 1), got {target_active!r}."
    )


def budget_at(budget: ActiveBudget, n: int | Array, step: Array) -> Array:
    """``log(K_t + 1)``: the budget after ``step`` epochs, geometric from n to K over ``anneal`` epochs.

    The same warm-up as the size budget of ``l0jax.nn.SizeBudget`` (``annealed_log_target``).
    """
    return annealed_log_target(n, budget.target, step, budget.anneal)


def apply_budget(
    budget: ActiveBudget,
    dual: DualState,
    old: Params,
    new: Params,
    temperature: Array,
    hparams: HyperParams,
    rule: EvalRule,
    step: Array,
    mask: Array | None = None,
) -> tuple[Params, DualState]:
    """One dual-ascent step of the budget's multiplier, applied as a shift of the gate logits.

    Args:
      budget: the ``ActiveBudget``.
      dual: the controller's state.
      old: the parameters before the optimizer step (with ``"log_alpha"``).
      new: the parameters after it.
      temperature: the gate temperature.
      hparams: the hyperparameters (gamma, zeta).
      rule: the deterministic gate rule (for the active count).
      step: the epoch (0-based) of this step, for the annealed budget.
      mask: a sharded run's real households (the padding counts nowhere), or None.

    Returns:
      ``(new params with log_alpha shifted, new controller state)``.
    """
    la_old, la_new = old["log_alpha"], new["log_alpha"]
    p_old = hc.prob_nonzero(la_old, temperature, gamma=hparams.gamma, zeta=hparams.zeta)
    p_new = hc.prob_nonzero(la_new, temperature, gamma=hparams.gamma, zeta=hparams.zeta)
    z = hc.hard_concrete_eval(la_new, temperature, gamma=hparams.gamma, zeta=hparams.zeta, rule=rule)
    columns = [p_old, p_new, (z > 0).astype(p_new.dtype)]
    n = la_new.shape[0]
    if mask is not None:
        columns = [jnp.where(mask, c, jnp.zeros((), c.dtype)) for c in columns] + [mask.astype(p_new.dtype)]
    # One stacked reduction instead of three (XLA compiles each reduction into its own kernel).
    sums = jnp.sum(jnp.stack(columns), axis=1)
    e_old, e_new, count = sums[0], sums[1], sums[2]
    if mask is not None:
        n = sums[3]  # the real households, without a sharded run's padding
    # The level is the deterministic count (what the user gets); the expected count's trend
    # anticipates where it is heading.
    level = jnp.log(count + 1.0)
    trend = jnp.log(e_new + 1.0) - jnp.log(e_old + 1.0)
    error = level + budget.horizon * trend - budget_at(budget, n, step)
    integral = jnp.clip(
        dual.integral + budget.integral_rate * error, -budget.integral_limit, budget.integral_limit
    )
    shift = (budget.rate * error + integral).astype(la_new.dtype)
    return {**new, "log_alpha": la_new - shift}, DualState(integral=integral.astype(jnp.float32))


def open_threshold(temperature: float, gamma: float, zeta: float, rule: EvalRule) -> float:
    """The logit above which a deterministic gate is open (> 0).

    ``clip(sigmoid(x) * (zeta - gamma) + gamma, 0, 1) > 0`` iff ``sigmoid(x) > -gamma / (zeta - gamma)``,
    with ``x = log_alpha / temperature`` for the ``"median"`` rule and ``x = log_alpha`` for ``"paper"``.
    """
    p = -gamma / (zeta - gamma)
    x = float(np.log(p) - np.log1p(-p))
    return x * temperature if rule == "median" else x


def snap_to_budget(log_alpha: np.ndarray, k: int, threshold: float) -> float | None:
    """The final value of the multiplier: the shift of the logits that opens exactly the K largest.

    The dual ascent brings the count within a few percent of K, where it jitters (gates near the
    threshold flip with the noise of each epoch); at the end the multiplier takes the value that
    meets the constraint exactly: the threshold midway between the K-th and the (K+1)-th largest
    logit.

    Args:
      log_alpha: the gate logits, shape (n,).
      k: K, 1 <= K <= n.
      threshold: ``open_threshold(...)``.

    Returns:
      The shift to subtract from every logit, or None when the K-th and (K+1)-th logits are equal
      (no shift separates them; the count is then left as the fit ended).
    """
    la = np.asarray(log_alpha, np.float64)
    n = la.size
    if k >= n:
        return float(min(la.min() - threshold - 1.0, 0.0))
    part = np.partition(la, (n - k - 1, n - k))
    below, kth = part[n - k - 1], part[n - k]
    if not kth > below:
        return None
    return float((kth + below) / 2.0 - threshold)
