"""The calibration model: parameters, hyperparameters, state, and the objective in one place.

Household weights are ``w = exp(log_weight) * z`` with hard-concrete gates ``z`` (Louizos et al.
2018) drawn from ``log_alpha``: non-negative by construction, and exactly zero where a gate closes.
With bounds ``(L, U)`` on ``w/d`` (``WeightBounds``), ``w = d (L + (U - L) sigmoid(log_weight)) * z``:
inside the bounds by construction, for any parameters.
The objective minimised at each epoch is

    loss = data_loss(M @ w)  +  lambda_l0 * sum_j P(z_j != 0)  +  lambda_l2 * sum_j exp(log_weight_j)^2

(l0-python's ``SparseCalibrationWeights.fit``), composed in ``objective`` from named terms so that
further terms (e.g. a distance to design weights) are added in this one place.

Everything a compiled step reads is an array in a pytree: the parameters, the optimizer state
(which carries the learning rate of the default Adam and the gate temperature), the PRNG key, the
step count and the hyperparameters ``HyperParams`` (the lambdas, gamma and zeta). Changing any of
them never recompiles. The problem data (operator, targets, per-target scales and weights) travel
as a second pytree, ``Problem``, an argument of the step as well.

Extending: a new penalty is a ``penalties.PenaltyTerm`` in ``Problem.terms`` carrying its own
strength and data (the distance to design weights and the aggregate penalties are built so);
``objective`` adds ``strength * value`` of each, so neither it nor ``HyperParams`` changes. Keep-K
mode (``Problem.budget``) adapts no hyperparameter: after every optimizer step ``engine.train_step``
lets ``dual.apply_budget`` move an offset of the gate logits (the budget's multiplier, kept in the
state's ``dual``; dual.py says why an offset and not ``lambda_l0``); the lambdas stay as given.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import losses, penalties
from l0jax._src.operators import MatrixOperator

Array = jax.Array
Params = dict[str, Array]  # {"log_weight": (n,), "log_alpha": (n,)}; no "log_alpha" without gates

# l0-python adds this before taking the log of the initial weights, so zero weights stay finite.
LOG_EPS = 1e-8
# Array keep probabilities are clipped into [KEEP_PROB_CLIP, 1 - KEEP_PROB_CLIP], as in l0-python.
KEEP_PROB_CLIP = 1e-6


class HyperParams(NamedTuple):
    """Hyperparameters of the objective, float32 scalars traced by the compiled step.

    Attributes:
      lambda_l0: strength of the expected-L0 penalty (>= 0).
      lambda_l2: strength of the L2 penalty on ``exp(log_weight)`` (>= 0).
      gamma: lower end of the gates' stretch interval (< 0).
      zeta: upper end of the gates' stretch interval (> 1).
    """

    lambda_l0: Array
    lambda_l2: Array
    gamma: Array
    zeta: Array


def make_hyperparams(lambda_l0: float, lambda_l2: float, gamma: float, zeta: float) -> HyperParams:
    """Checks and packs the hyperparameters as float32 scalars.

    Args:
      lambda_l0: L0 strength, >= 0.
      lambda_l2: L2 strength, >= 0.
      gamma: stretch lower end, < 0.
      zeta: stretch upper end, > 1.

    Returns:
      A ``HyperParams``.
    """
    checks.check_nonnegative("lambda_l0", lambda_l0, hint="It is the L0 penalty strength, e.g. 1e-4.")
    checks.check_nonnegative("lambda_l2", lambda_l2, hint="It is the L2 penalty strength; 0 turns it off.")
    checks.check_stretch(gamma, zeta)
    f32 = [jnp.asarray(x, jnp.float32) for x in (lambda_l0, lambda_l2, gamma, zeta)]
    return HyperParams(*f32)


class Problem(NamedTuple):
    """The data of a calibration, passed to the compiled step as an argument (never closed over).

    Attributes:
      op: the matrix M (targets x households) as an operator from ``as_operator``.
      targets: target values y, shape (m,).
      scale: per-target residual scale of the loss type, shape (m,) (``losses.target_scale``).
      weights: per-target loss weights, shape (m,) (``losses.group_weights``).
      terms: extra objective terms (``penalties.PenaltyTerm``: distance to design weights,
        aggregate penalties), each adding ``strength * value`` to the loss; empty by default.
      budget: a ``dual.ActiveBudget`` (keep K households: a gate-logit offset follows a
        dual-ascent rule after every step), or None.
      bounds: a ``WeightBounds`` (every household's ungated weight held in ``[lower, upper]`` by
        the map ``bounded_weights``; ``log_weight`` then holds its logit), or None.
      mask: None, or booleans of shape (n,) marking the real households of a sharded run; the
        others are padding (empty columns of M) whose gates stay shut and which no sum counts
        (``sharding.py``).
    """

    op: MatrixOperator
    targets: Array
    scale: Array
    weights: Array
    terms: tuple = ()
    budget: Any = None
    bounds: Any = None
    mask: Array | None = None


class CalibrationState(NamedTuple):
    """Everything the fit loop carries from one epoch to the next.

    Attributes:
      params: ``{"log_weight": (n,), "log_alpha": (n,)}`` (no ``"log_alpha"`` without gates).
      opt_state: the optax state; holds the temperature (``anneal_temperature``) and, for the
        default Adam, the learning rate.
      key: the base PRNG key; epoch ``t`` draws its gates from ``fold_in(key, t)``.
      step: number of epochs done, int32.
      hparams: the ``HyperParams``.
      dual: the keep-K controller's state (``dual.py``), or None outside keep-K mode.
    """

    params: Params
    opt_state: Any
    key: Array
    step: Array
    hparams: HyperParams
    dual: Any = None


# --------------------------------------------------------------------------------------------
# Initial parameters
# --------------------------------------------------------------------------------------------


def _per_household(name: str, value: Any, n: int, default: float) -> np.ndarray:
    """A scalar broadcast to (n,), or an array that must have shape (n,) (l0-python's message)."""
    if value is None:
        return np.full(n, default, dtype=np.float64)
    arr = checks.real_array(name, value)
    if arr.ndim == 0:
        return np.full(n, float(arr), dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} array must have shape ({n},), got {arr.shape}.")
    return arr


def initial_log_weight(init_weights: ArrayLike | None, n: int) -> np.ndarray:
    """``log(init_weights + 1e-8)`` as in l0-python; None means all ones.

    Args:
      init_weights: None, a scalar or an array of shape (n,); finite and >= 0.
      n: number of households.

    Returns:
      float64 array of shape (n,).
    """
    w = _per_household("init_weights", init_weights, n, 1.0)
    checks.check_nonnegative(
        "init_weights", w, hint="Weights are non-negative; use 0 for households to start at zero."
    )
    return np.log(w + LOG_EPS)


def initial_log_alpha(init_keep_prob: ArrayLike, n: int) -> np.ndarray:
    """``logit(clip(init_keep_prob, 1e-6, 1 - 1e-6))``: the gates' starting keep probability.

    Args:
      init_keep_prob: a scalar or an array of shape (n,) in [0, 1]; 0 and 1 are clipped inside.
      n: number of households.

    Returns:
      float64 array of shape (n,).
    """
    p = _per_household("init_keep_prob", init_keep_prob, n, 0.5)
    checks.check_finite("init_keep_prob", p)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(
            f"init_keep_prob must lie in [0, 1] (a probability of keeping a household), got values in "
            f"[{p.min()!r}, {p.max()!r}]."
        )
    p = np.clip(p, KEEP_PROB_CLIP, 1.0 - KEEP_PROB_CLIP)
    return np.log(p) - np.log1p(-p)


def host_rng(key: Array, purpose: int) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key's data and a purpose number: explicit and reproducible.

    Initial jitter is drawn on the host: one-off draws do not deserve a compiled kernel per shape.
    """
    words = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel().tolist()
    return np.random.default_rng([*words, purpose])


def init_params(
    key: Array,
    n: int,
    *,
    init_weights: ArrayLike | None = None,
    init_keep_prob: ArrayLike = 0.5,
    log_weight_jitter_sd: float = 0.0,
    log_alpha_jitter_sd: float = 0.01,
    use_gates: bool = True,
    log_alpha: ArrayLike | None = None,
    weight_bounds: tuple[float, float] | None = None,
) -> Params:
    """Starting parameters: log weights and gate logits, each with optional Gaussian jitter.

    Args:
      key: PRNG key; the jitters are drawn from ``host_rng(key, 0)`` (log_alpha) and
        ``host_rng(key, 1)`` (log_weight).
      n: number of households.
      init_weights: initial weights (None = 1), scalar or shape (n,).
      init_keep_prob: initial keep probability of the gates, scalar or shape (n,).
      log_weight_jitter_sd: standard deviation of the jitter added to the log weights (>= 0).
      log_alpha_jitter_sd: standard deviation of the jitter added to log_alpha (>= 0).
      use_gates: without gates there is no ``"log_alpha"``.
      log_alpha: ready-made gate logits of shape (n,) to use instead of ``init_keep_prob`` and its
        jitter (the object API draws them in its constructor).
      weight_bounds: ``(L, U)`` on ``w / init_weights``: ``"log_weight"`` then holds the logit of
        ``bounded_weights``, starting at ratio 1 (``initial_bounded_logit``), jitter added to it.

    Returns:
      ``{"log_weight": (n,), "log_alpha": (n,)}``, float32.
    """
    checks.check_nonnegative("log_weight_jitter_sd", log_weight_jitter_sd)
    checks.check_nonnegative("log_alpha_jitter_sd", log_alpha_jitter_sd)
    if weight_bounds is None:
        log_weight = initial_log_weight(init_weights, n)
    else:
        log_weight = initial_bounded_logit(weight_bounds, n)
    if log_weight_jitter_sd > 0:
        log_weight = log_weight + log_weight_jitter_sd * host_rng(key, 1).standard_normal(n)
    params = {"log_weight": jnp.asarray(log_weight, jnp.float32)}
    if use_gates:
        if log_alpha is None:
            log_alpha = initial_log_alpha(init_keep_prob, n)
            if log_alpha_jitter_sd > 0:
                log_alpha = log_alpha + log_alpha_jitter_sd * host_rng(key, 0).standard_normal(n)
        params["log_alpha"] = jnp.asarray(log_alpha, jnp.float32)
    return params


# --------------------------------------------------------------------------------------------
# Weights and objective
# --------------------------------------------------------------------------------------------


def gate_noise(key: Array, n: int, counter: Any = 0) -> Array:
    """Uniform noise for ``n`` gates, strictly inside (0, 1), from a PRNG key and a counter (the epoch).

    ``hash_uniform(key, (n,), counter=counter)`` of the pure core: a counter-based integer hash
    that XLA fuses into the gate computation, where ``jax.random`` (threefry) is a separate pass
    costing as much as the rest of an epoch's elementwise work on CPU. Gate ``j``'s noise depends
    only on (key, epoch, j), so a sharded run (whose arrays are global) draws the same gates on
    any number of devices. ``tests/calibration/test_calibration_model.py`` checks the gates against the closed
    forms and the noise for uniformity and independence across gates and epochs.

    Args:
      key: a JAX PRNG key (any implementation; its raw data words are hashed).
      n: number of gates.
      counter: an integer (e.g. the epoch), traced or not.

    Returns:
      float32 noise of shape (n,).
    """
    return hc.hash_uniform(key, (n,), counter=counter)


def _shut_padding(gates: Array | None, mask: Array | None) -> Array | None:
    """Gates with the padding households of a sharded run (``mask`` False) held at exactly 0."""
    if mask is None or gates is None:
        return gates
    return jnp.where(mask, gates, jnp.zeros((), gates.dtype))


def sampled_gates(
    params: Params,
    key: Array,
    temperature: Array,
    hparams: HyperParams,
    counter: Any = 0,
    mask: Array | None = None,
) -> Array | None:
    """Training gates, eqs. 9-10, with noise ``gate_noise(key, n, counter)`` (None without gates).

    Household ``j`` draws ``gate_noise(...)[j]``, a function of ``(key, j, counter)`` only, so a
    sharded run (whose arrays hold the global index order) draws the same gates on any number of
    devices; ``mask`` shuts the padding households' gates.
    """
    if "log_alpha" not in params:
        return None
    log_alpha = params["log_alpha"]
    u = gate_noise(key, log_alpha.shape[0], counter)
    gates = hc.hard_concrete_from_uniform(u, log_alpha, temperature, gamma=hparams.gamma, zeta=hparams.zeta)
    return _shut_padding(gates, mask)


def deterministic_gates(
    params: Params,
    temperature: Array,
    hparams: HyperParams,
    rule: EvalRule,
    bounds: WeightBounds | None = None,
    mask: Array | None = None,
) -> Array | None:
    """Test-time gates (``hard_concrete_eval``; None without gates); ``mask`` shuts the padding's.

    With weight bounds an open gate counts fully (1): a household is either out (weight 0) or in
    with its weight inside its bounds, never scaled below its lower bound by a fractional gate.
    """
    if "log_alpha" not in params:
        return None
    z = hc.hard_concrete_eval(
        params["log_alpha"], temperature, gamma=hparams.gamma, zeta=hparams.zeta, rule=rule
    )
    return _shut_padding(z if bounds is None else (z > 0).astype(z.dtype), mask)


class WeightBounds(NamedTuple):
    """Bounds on each household's ungated weight: ``L d_j <= w_j <= U d_j`` (``weight_bounds=(L, U)``).

    Attributes:
      lower: ``L * d``, shape (n,).
      upper: ``U * d``, shape (n,).
    """

    lower: Array
    upper: Array


def check_weight_bounds(weight_bounds: Any) -> tuple[float, float]:
    """``weight_bounds=(L, U)`` on ``w / init_weights`` as two floats with ``0 <= L < U < inf``.

    Raises:
      ValueError: anything else, naming the argument.
    """
    try:
        lo, hi = (float(b) for b in weight_bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"weight_bounds must be a pair (L, U) bounding w / init_weights, got {weight_bounds!r}."
        ) from None
    if not (0 <= lo < hi < np.inf):
        raise ValueError(
            f"weight_bounds=(L, U) needs 0 <= L < U < inf (bounds on w / init_weights), got "
            f"{weight_bounds!r}; for no upper bound use a large U."
        )
    return lo, hi


def make_weight_bounds(
    weight_bounds: Any, init_weights: ArrayLike | None, n: int, dtype: DTypeLike = jnp.float32
) -> WeightBounds:
    """Checks ``weight_bounds=(L, U)`` on ``w/d`` (d = ``init_weights``, None = 1) and builds the bounds."""
    lo, hi = check_weight_bounds(weight_bounds)
    d = _per_household("init_weights", init_weights, n, 1.0)
    checks.check_nonnegative("init_weights", d)
    return WeightBounds(jnp.asarray(lo * d, dtype), jnp.asarray(hi * d, dtype))


def initial_bounded_logit(weight_bounds: tuple[float, float], n: int) -> np.ndarray:
    """The logit ``theta`` at which ``bounded_weights`` starts at ``w = d`` (ratio 1, or the nearest
    ratio inside the bounds, a thousandth of their width in), float64 of shape (n,).
    """
    lo, hi = (float(b) for b in weight_bounds)
    gap = 1e-3 * (hi - lo)
    p = (min(max(1.0, lo + gap), hi - gap) - lo) / (hi - lo)
    return np.full(n, np.log(p) - np.log1p(-p))


def round_into_bounds(
    weights: np.ndarray, init_weights: ArrayLike | None, weight_bounds: tuple[float, float]
) -> np.ndarray:
    """The returned weights with every non-zero ``w / d`` inside ``[L, U]`` when computed in float64.

    ``bounded_weights`` keeps the weights inside in exact arithmetic; rounding ``L d`` to float32
    can land one unit in the last place outside. Such weights move to the nearest float inside.

    Args:
      weights: the weights, shape (n,), float32 or float64; zeros (closed gates) stay zero.
      init_weights: d (None = 1), scalar or shape (n,).
      weight_bounds: ``(L, U)``.

    Returns:
      The weights, same dtype.
    """
    w = np.array(weights)
    d = _per_household("init_weights", init_weights, w.shape[0], 1.0)
    lo, hi = (float(b) for b in weight_bounds)
    active = (w > 0) & (d > 0)
    for _ in range(4):  # one step fixes float rounding; a few guard against a bound on an ulp boundary
        ratio = np.where(active, w.astype(np.float64) / np.where(d > 0, d, 1.0), lo)
        low, high = active & (ratio < lo), active & (ratio > hi)
        if not (low.any() or high.any()):
            break
        w[low] = np.nextafter(w[low], np.asarray(np.inf, w.dtype))
        w[high] = np.nextafter(w[high], np.asarray(0, w.dtype))
    return w


def bounded_weights(theta: Array, bounds: WeightBounds) -> Array:
    """``lower + (upper - lower) * sigmoid(theta)``: weights inside their bounds for any ``theta``."""
    return bounds.lower + (bounds.upper - bounds.lower) * jax.nn.sigmoid(theta)


def base_weights(log_weight: Array, bounds: WeightBounds | None = None) -> Array:
    """The ungated weights: ``exp(log_weight)``, or ``bounded_weights(log_weight, bounds)`` with bounds."""
    return jnp.exp(log_weight) if bounds is None else bounded_weights(log_weight, bounds)


def gated_weights(log_weight: Array, gates: Array | None, bounds: WeightBounds | None = None) -> Array:
    """``base_weights(log_weight, bounds) * gates`` (just the base weights without gates)."""
    w = base_weights(log_weight, bounds)
    return w if gates is None else w * gates


def expected_active(params: Params, temperature: Array, hparams: HyperParams) -> Array:
    """Expected number of open gates, ``sum_j P(z_j != 0)`` (eq. 12); 0 without gates."""
    if "log_alpha" not in params:
        return jnp.zeros((), jnp.float32)
    return hc.l0_penalty(params["log_alpha"], temperature, gamma=hparams.gamma, zeta=hparams.zeta)


def objective(
    params: Params,
    problem: Problem,
    hparams: HyperParams,
    temperature: Array,
    key: Array,
    step: Any = 0,
) -> tuple[Array, dict[str, Array]]:
    """The training loss of one epoch, with sampled gates, and its named terms.

    Args:
      params: current parameters.
      problem: the matrix, targets, scales and weights.
      hparams: lambdas and the stretch interval.
      temperature: gate temperature.
      key: the run's PRNG key.
      step: the epoch; the gates' noise is ``gate_noise(key, n, step)``.

    Returns:
      ``(loss, terms)``: the scalar loss and ``{"data", "l0", "l2"}`` (unweighted terms), plus the
      unweighted value of each extra term of ``problem.terms`` under its name.
    """
    gates = sampled_gates(params, key, temperature, hparams, step, problem.mask)
    weights = gated_weights(params["log_weight"], gates, problem.bounds)
    predictions = problem.op.matvec(weights)
    l0, l2 = household_sums(
        prob_open(params, temperature, hparams),
        jnp.square(base_weights(params["log_weight"], problem.bounds)),
        mask=problem.mask,
    )
    terms = {
        "data": losses.data_loss(predictions, problem.targets, problem.scale, problem.weights),
        "l0": l0,
        "l2": l2,
    }
    loss = terms["data"] + hparams.lambda_l0 * terms["l0"] + hparams.lambda_l2 * terms["l2"]
    if problem.terms:
        extra, values = penalties.extra_penalty(problem.terms, weights, predictions)
        terms.update(values)
        loss = loss + extra
    return loss, terms


def household_sums(*columns: Array | None, mask: Array | None = None) -> list[Array]:
    """Sums of several per-household arrays as one stacked reduction (None sums to 0).

    XLA on CPU compiles every reduction into its own kernel at ~0.1 s each; one stacked reduction
    keeps the compile time of the fit loop down. ``mask`` (a sharded run's real households)
    leaves the padding out of every sum.
    """
    present = [c for c in columns if c is not None]
    if mask is not None:
        present = [jnp.where(mask, c, jnp.zeros((), c.dtype)) for c in present]
    sums = iter(jnp.sum(jnp.stack(present), axis=1) if present else [])
    return [next(sums) if c is not None else jnp.zeros((), jnp.float32) for c in columns]


def prob_open(params: Params, temperature: Array, hparams: HyperParams) -> Array | None:
    """P(z_j != 0) per household (eq. 12); None without gates."""
    if "log_alpha" not in params:
        return None
    return hc.prob_nonzero(params["log_alpha"], temperature, gamma=hparams.gamma, zeta=hparams.zeta)
