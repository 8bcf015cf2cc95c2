"""The compiled fit: pure ``init -> step`` functions, a chunked loop, and the final polish.

* ``init_state`` builds a ``CalibrationState`` (parameters, optax state, key, step, hyperparameters).
* ``train_step`` is one epoch: gates drawn with ``model.gate_noise(key, n, step)``, the gradient of
  ``model.objective``, the optimizer's update. Pure; the state and the ``Problem`` are arguments.
* ``run_chunk`` runs a traced number of epochs in one compiled loop (a ``lax.while_loop``: the step
  count is an array, so no count recompiles), stops at the first non-finite loss, and returns the
  deterministic metrics of the end state, so the host sees the run once per chunk (progress bar,
  history) and never in between.
* ``finish`` computes the returned weights: deterministic gates, then the polish, which freezes the
  active set chosen by the gates and refits the remaining weights with those gates held fixed,
  keeping the best iterate.
* ``fit`` is the host driver: chunks, tqdm, history, and the non-finite error (the failed chunk is
  replayed from its start up to the last state whose loss was finite).

``StepConfig`` holds what is static (the optax transformation and the eval rule); compiled
functions are cached on it by JAX, so a second fit with the same optimizer object reuses them.
Everything else (the lambdas, learning rate, temperature, stretch interval, step count, the matrix
behind the operator) is an array argument: changing it never recompiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from l0jax._src import checks
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import dual, losses, penalties
from l0jax._src.calibration.model import (
    CalibrationState,
    HyperParams,
    Params,
    Problem,
    base_weights,
    deterministic_gates,
    gated_weights,
    household_sums,
    objective,
    prob_open,
)
from l0jax._src.calibration.sharding import fetch_tree
from l0jax._src.schedules import (
    AnnealTemperatureState,
    Schedule,
    anneal_temperature,
    current_temperature,
)

Array = jax.Array


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes:
      epoch: the 1-based epoch whose loss was not finite (computed at the state after epoch
        ``epoch - 1``).
      state: the last state whose loss was finite: the one after epoch ``epoch - 2``, one
        optimizer step before the state whose loss failed. Continue from it with a smaller
        learning rate, or inspect it.
      history: the per-chunk metrics recorded before the failure.
    """

    def __init__(self, message: str, epoch: int, state: CalibrationState, history: dict[str, np.ndarray]):
        super().__init__(message)
        self.epoch = epoch
        self.state = state
        self.history = history


# --------------------------------------------------------------------------------------------
# Optimizer assembly
# --------------------------------------------------------------------------------------------


class HeldTemperatureState(AnnealTemperatureState):
    """State of ``held_temperature``: an ``AnnealTemperatureState`` whose temperature never changes."""


def held_temperature() -> optax.GradientTransformation:
    """A constant-temperature ``anneal_temperature`` whose value lives in its state, not in code.

    ``init`` starts at NaN and ``set_temperature`` writes the value, so one compiled step serves
    every temperature (``anneal_temperature(t)`` with a constant ``t`` would bake it into the program).
    ``l0jax.current_temperature`` reads it like any annealed temperature.
    """

    def init_fn(params: Any) -> HeldTemperatureState:
        del params
        return HeldTemperatureState(
            count=jnp.zeros((), jnp.int32), temperature=jnp.full((), jnp.nan, jnp.float32)
        )

    def update_fn(updates: Any, state: HeldTemperatureState, params: Any = None):
        del params
        count = cast(jax.Array, optax.safe_increment(state.count))  # an array in, an array out
        return updates, HeldTemperatureState(count=count, temperature=state.temperature)

    # optax types a transformation's state as any OptState; this one's is HeldTemperatureState.
    return optax.GradientTransformation(init_fn, cast(optax.TransformUpdateFn, update_fn))


_HELD = held_temperature()
# Adam with its learning rate in the state: changing lr never recompiles.
_ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
_TX_CACHE: dict[tuple[int, int], tuple[Any, Any, optax.GradientTransformation]] = {}
_TX_CACHE_SIZE = 32


def make_optimizer(
    optimizer: optax.GradientTransformation | None, temperature: Schedule | float | None
) -> optax.GradientTransformation:
    """``optax.chain(optimizer or Adam, temperature transform)``, the same object for the same inputs.

    Args:
      optimizer: an optax transformation for the parameters, or None for Adam (learning rate in
        the state, set by ``init_state``).
      temperature: None or a number (constant temperature, stored in the state), or a schedule
        (a function of the step count, e.g. ``temperature_schedule(...)``), annealed by
        ``anneal_temperature``.

    Returns:
      The chained transformation. Identical inputs give the identical object, so compiled steps
      are reused.
    """
    base = _ADAM if optimizer is None else optimizer
    key = (id(base), id(temperature) if callable(temperature) else 0)
    hit = _TX_CACHE.get(key)
    # Identity checks guard against a recycled id() of a collected object.
    if hit is not None and hit[0] is base and (hit[1] is temperature or not callable(temperature)):
        return hit[2]
    tx = optax.chain(base, anneal_temperature(temperature) if callable(temperature) else _HELD)
    if len(_TX_CACHE) >= _TX_CACHE_SIZE:
        _TX_CACHE.pop(next(iter(_TX_CACHE)))
    _TX_CACHE[key] = (base, temperature if callable(temperature) else None, tx)
    return tx


def _map_states(tree: Any, kind: type, fn: Callable[[Any], Any]) -> Any:
    return jax.tree_util.tree_map(
        lambda s: fn(s) if isinstance(s, kind) else s, tree, is_leaf=lambda s: isinstance(s, kind)
    )


def set_temperature(opt_state: Any, value: float) -> Any:
    """Writes a constant temperature into the ``held_temperature`` state of ``opt_state`` (if any)."""
    checks.check_positive("temperature", value, hint="It is the gate temperature, e.g. 2/3.")
    v = jnp.asarray(value, jnp.float32)
    return _map_states(opt_state, HeldTemperatureState, lambda s: s._replace(temperature=v))


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    """Writes ``lr`` into every injected ``learning_rate`` hyperparameter of ``opt_state``."""
    checks.check_positive("lr", lr, hint="It is the learning rate, e.g. 0.01.")

    def put(s):
        if "learning_rate" in s.hyperparams:
            hp = dict(s.hyperparams)
            hp["learning_rate"] = jnp.asarray(lr, jnp.asarray(hp["learning_rate"]).dtype)
            return s._replace(hyperparams=hp)
        return s

    return _map_states(opt_state, optax.InjectStatefulHyperparamsState, put)


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static configuration of the compiled functions (hashable; part of the jit cache key).

    Attributes:
      tx: the optax transformation (from ``make_optimizer``).
      eval_rule: deterministic gate rule, ``"median"`` or ``"paper"``.
    """

    tx: optax.GradientTransformation
    eval_rule: EvalRule = "median"


def init_state(
    config: StepConfig,
    params: Params,
    key: Array,
    hparams: HyperParams,
    *,
    lr: float | None = None,
    temperature: float | None = None,
) -> CalibrationState:
    """The state before the first epoch.

    Args:
      config: the static configuration.
      params: initial parameters (``model.init_params``).
      key: base PRNG key of the training noise.
      hparams: the hyperparameters.
      lr: learning rate for injected-hyperparameter optimizers (the default Adam).
      temperature: the constant temperature, when no schedule was given.

    Returns:
      A ``CalibrationState`` with ``step = 0``.
    """
    opt_state = jax.jit(config.tx.init)(params)  # one compiled call instead of many eager ones
    if lr is not None:
        opt_state = set_learning_rate(opt_state, lr)
    if temperature is not None:
        opt_state = set_temperature(opt_state, temperature)
    return CalibrationState(
        params=params, opt_state=opt_state, key=key, step=jnp.zeros((), jnp.int32), hparams=hparams
    )


def train_step(
    config: StepConfig, state: CalibrationState, problem: Problem
) -> tuple[CalibrationState, dict[str, Array]]:
    """One epoch: sampled gates, gradient of the objective, optimizer update.

    ``ok`` says whether the loss was finite. The update is applied either way: the loop stops at
    the first non-finite loss and the host replays the chunk up to the last finite state, so the
    step itself carries no select over the state (a pass over memory and a compiled kernel per
    array). A non-finite gradient with a finite loss makes the next loss non-finite.

    Args:
      config: the static configuration.
      state: the current state.
      problem: matrix, targets, scales and weights.

    Returns:
      ``(new_state, metrics)`` with metrics ``loss``, ``data``, ``l0``, ``l2`` (at the old
      parameters) and ``ok``.
    """
    temperature = current_temperature(state.opt_state)
    (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, problem, state.hparams, temperature, state.key, state.step
    )
    updates, opt_state = config.tx.update(grads, state.opt_state, state.params)
    params = cast(Params, optax.apply_updates(state.params, updates))  # the structure of state.params
    dual_state = state.dual
    if problem.budget is not None and "log_alpha" in params:
        # Keep-K mode: the budget's multiplier takes its dual-ascent step (dual.py).
        params, dual_state = dual.apply_budget(
            problem.budget,
            state.dual,
            state.params,
            params,
            temperature,
            state.hparams,
            config.eval_rule,
            state.step,
            problem.mask,
        )
    ok = jnp.isfinite(loss)
    new = state._replace(params=params, opt_state=opt_state, step=state.step + 1, dual=dual_state)
    return new, dict(loss=loss, ok=ok, **terms)


def evaluate(config: StepConfig, state: CalibrationState, problem: Problem) -> dict[str, Array]:
    """Deterministic-gate metrics of a state: errors against the targets and the active count.

    Returns:
      ``data`` (the data loss), ``mean_rel_error``, ``max_rel_error`` (``|pred - y| / (|y| + 1)``),
      ``active`` (households with a non-zero deterministic gate), ``expected_active``
      (sum of P(z != 0)) and ``temperature``.
    """
    temperature = current_temperature(state.opt_state)
    gates = deterministic_gates(
        state.params, temperature, state.hparams, config.eval_rule, bounds=problem.bounds, mask=problem.mask
    )
    weights = gated_weights(state.params["log_weight"], gates, problem.bounds)
    pred = problem.op.matvec(weights)
    rel = losses.relative_errors(pred, problem.targets)
    residual = (pred - problem.targets) * problem.scale
    # Stacked sums: one reduction kernel per axis length instead of one per metric (compile time).
    data, rel_sum = jnp.sum(jnp.stack([problem.weights * jnp.square(residual), rel]), axis=1)
    open_gates = (weights > 0) if gates is None else (gates > 0)
    active, expected = household_sums(
        open_gates.astype(jnp.float32), prob_open(state.params, temperature, state.hparams), mask=problem.mask
    )
    return {
        "data": data,
        "mean_rel_error": rel_sum / rel.shape[0],
        "max_rel_error": jnp.max(rel),
        "active": active.astype(jnp.int32),
        "expected_active": expected,
        "temperature": temperature,
    }


def run_chunk_impl(config: StepConfig, state: CalibrationState, problem: Problem, num_steps: Array):
    """Runs ``num_steps`` epochs in one loop, then evaluates the end state (see module doc).

    If an epoch's loss is not finite the loop stops there: ``stats["ok"]`` is False, ``stats["steps"]``
    counts the epochs with a finite loss before it, and the returned state is not to be used (the
    host replays the chunk from its start, see ``fit``).
    """

    def cond(carry):
        _, i, ok, _, _ = carry
        return (i < num_steps) & ok

    def body(carry):
        st, i, _, loss_mean, data_mean = carry
        st, m = train_step(config, st, problem)
        ok = m["ok"]
        # Running means: a float32 sum of many large losses would overflow where the mean does not.
        frac = 1.0 / (i + 1).astype(jnp.float32)
        loss_mean = jnp.where(ok, loss_mean + (m["loss"] - loss_mean) * frac, loss_mean)
        data_mean = jnp.where(ok, data_mean + (m["data"] - data_mean) * frac, data_mean)
        return st, i + ok.astype(jnp.int32), ok, loss_mean, data_mean

    zero = jnp.zeros((), jnp.float32)
    init = (state, jnp.zeros((), jnp.int32), jnp.bool_(True), zero, zero)
    state, done, ok, loss_mean, data_mean = jax.lax.while_loop(cond, body, init)
    stats = {"steps": done, "ok": ok, "loss": loss_mean, "train_data": data_mean}
    stats.update(evaluate(config, state, problem))
    return state, stats


run_chunk = jax.jit(run_chunk_impl, static_argnums=0)


def finish_impl(
    config: StepConfig, state: CalibrationState, problem: Problem, opt_state: Any, num_steps: Array
) -> tuple[Array, Array, Array, Array]:
    """The returned weights: deterministic gates, then ``num_steps`` steps of polish (0: none).

    The polish refits the log weights of the active households with the deterministic gates held
    fixed. Its objective is the data loss plus the L2 term and the extra terms of ``problem.terms``
    (the L0 term is constant once the active set is frozen); the best iterate is kept, so it never
    ends above where it started.

    Returns:
      ``(weights, gates, end_objective, start_objective)``; gates are ones without gates.
    """
    temperature = current_temperature(state.opt_state)
    hp = state.hparams
    gates = deterministic_gates(
        state.params, temperature, hp, config.eval_rule, bounds=problem.bounds, mask=problem.mask
    )

    def loss_fn(log_weight):
        w = gated_weights(log_weight, gates, problem.bounds)
        pred = problem.op.matvec(w)
        data = losses.data_loss(pred, problem.targets, problem.scale, problem.weights)
        squares = jnp.square(base_weights(log_weight, problem.bounds))
        l2 = jnp.sum(squares) if problem.mask is None else household_sums(squares, mask=problem.mask)[0]
        loss = data + hp.lambda_l2 * l2
        if problem.terms:  # distance to design weights, aggregate penalties (penalties.py)
            loss = loss + penalties.extra_penalty(problem.terms, w, pred)[0]
        return loss

    # num_steps + 1 evaluations, the last update unused: one compiled loss instead of three.
    def body(i, carry):
        lw, opt, best_lw, best, start = carry
        loss, g = jax.value_and_grad(loss_fn)(lw)
        start = jnp.where(i == 0, loss, start)
        better = loss < best  # False for NaN: a non-finite iterate is never kept
        best_lw = jnp.where(better, lw, best_lw)
        best = jnp.where(better, loss, best)
        upd, opt = _ADAM.update(g, opt, lw)
        return optax.apply_updates(lw, upd), opt, best_lw, best, start

    lw0 = state.params["log_weight"]
    inf = jnp.full((), jnp.inf, jnp.float32)
    _, _, lw, best, start = jax.lax.fori_loop(0, num_steps + 1, body, (lw0, opt_state, lw0, inf, inf))
    # Without any finite iterate (a non-finite start), the starting weights are returned as they are.
    gates = jnp.ones_like(lw) if gates is None else gates
    return gated_weights(lw, gates, problem.bounds), gates, best, start


finish_run = jax.jit(finish_impl, static_argnums=0)


def polish_start(log_weight: Array, lr: float) -> Any:
    """The optimizer state a polish starts from: a fresh Adam at ``lr`` for ``log_weight`` (shape (n,))."""
    return set_learning_rate(jax.jit(_ADAM.init)(log_weight), lr)


def finish(
    config: StepConfig, state: CalibrationState, problem: Problem, polish_epochs: int, lr: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Host wrapper of ``finish_impl``: the polish runs a fresh Adam at ``lr`` for ``polish_epochs``.

    Returns:
      ``(weights, gates, end objective, start objective)`` as NumPy values.
    """
    opt = polish_start(state.params["log_weight"], lr)
    w, gates, end, start = fetch_tree(
        finish_run(config, state, problem, opt, jnp.asarray(polish_epochs, jnp.int32))
    )
    return np.asarray(w), np.asarray(gates), float(end), float(start)


# --------------------------------------------------------------------------------------------
# Host driver
# --------------------------------------------------------------------------------------------


def _non_finite(
    config: StepConfig,
    problem: Problem,
    start: CalibrationState,
    steps: int,
    previous: CalibrationState,
    rows: list[dict[str, float]],
) -> NonFiniteLossError:
    """The error for a chunk that met a non-finite loss, with the last state whose loss was finite.

    The chunk began at ``start`` (after epoch c) and took ``steps`` finite epochs; the loss at the
    state after epoch k = c + steps was not finite, and the one after epoch k - 1 was. That state is
    recomputed, bitwise, from ``start`` (or from ``previous``, the chunk before, when k = c).
    """
    c = int(start.step)
    k = c + steps
    if steps >= 1:
        base = start
    elif int(previous.step) < c:
        base = previous
    else:
        base = None  # the very first state of this fit already had a non-finite loss
    last = start
    if base is not None:
        last, _ = run_chunk(config, base, problem, jnp.asarray(k - 1 - int(base.step), jnp.int32))
    kept = int(last.step)
    where = (
        f"kept the state after epoch {kept}, the last whose loss was finite"
        if base is not None
        else "no earlier state of this fit had a finite loss; kept its starting state"
    )
    return NonFiniteLossError(
        f"the training loss became NaN or infinite at epoch {k + 1}; the fit stopped and {where} "
        f"(NonFiniteLossError.state). Lower lr, check the scale of M and of the targets, or use "
        f"loss_type='relative'.",
        k + 1,
        last,
        _history(rows),
    )


HISTORY_KEYS = (
    "epoch",
    "loss",
    "train_data",
    "data",
    "mean_rel_error",
    "max_rel_error",
    "active",
    "expected_active",
    "temperature",
)


def _history(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {k: np.asarray([r[k] for r in rows]) for k in HISTORY_KEYS}


def fit(
    config: StepConfig,
    state: CalibrationState,
    problem: Problem,
    epochs: int,
    *,
    chunk: int = 100,
    verbose: bool = False,
    desc: str = "calibrate",
    callback: Callable[[CalibrationState, dict[str, float]], bool | None] | None = None,
) -> tuple[CalibrationState, dict[str, np.ndarray]]:
    """Runs ``epochs`` epochs in compiled chunks of ``chunk`` epochs; the host wakes once per chunk.

    Args:
      config: the static configuration.
      state: the starting state (continues its step count, optimizer moments and key).
      problem: the data.
      epochs: number of epochs, >= 1.
      chunk: epochs per compiled call (history row and progress-bar update), >= 1.
      verbose: show a tqdm progress bar with the loss, mean and max relative error and active count.
      desc: the progress bar's label.
      callback: called on the host after each chunk with the state and the chunk's history row
        (checkpoints, logs, early stopping); returning True stops the fit there.

    Returns:
      ``(state, history)``: the end state and per-chunk metrics (``HISTORY_KEYS``), each an array
      with one entry per chunk.

    Raises:
      NonFiniteLossError: the loss or gradient turned non-finite; carries the epoch and the last
        finite state.
    """
    epochs = checks.check_int_at_least("epochs", epochs, 1)
    # calibrate and SparseCalibrationWeights.fit check their own names (log_every, verbose_freq)
    # first; only a direct caller of fit gets here with a bad one.
    chunk = checks.check_int_at_least("chunk", chunk, 1)
    rows: list[dict[str, float]] = []
    # The starts of the last two chunks: from them a failed chunk is replayed (bitwise) up to the
    # last state whose loss was finite, at no cost while nothing fails.
    previous = state
    done = 0
    bar = None
    if verbose and jax.process_index() == 0:  # one progress bar in a multi-process run
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc=desc, unit="epoch", dynamic_ncols=True)
    try:
        while done < epochs:
            todo = min(chunk, epochs - done)
            start = state
            state, stats = run_chunk(config, start, problem, jnp.asarray(todo, jnp.int32))
            stats = fetch_tree(stats)
            if not bool(stats["ok"]):
                raise _non_finite(config, problem, start, int(stats["steps"]), previous, rows)
            previous = start
            row = {k: float(v) for k, v in stats.items() if k != "ok"}
            row["epoch"] = int(state.step)
            row["active"] = int(stats["active"])
            done += int(stats["steps"])
            rows.append(row)
            if bar is not None:
                bar.update(int(stats["steps"]))
                bar.set_postfix(
                    loss=f"{row['loss']:.4g}",
                    mean_err=f"{row['mean_rel_error']:.2%}",
                    max_err=f"{row['max_rel_error']:.1%}",
                    active=row["active"],
                    refresh=False,
                )
            if callback is not None and callback(state, row):
                break
    finally:
        if bar is not None:
            bar.close()
    return state, _history(rows)
