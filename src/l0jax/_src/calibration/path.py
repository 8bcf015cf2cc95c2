"""The L0 strength chosen on held-out targets: a grid of fits in one vmapped, compiled run.

``calibrate_path`` fits the calibration on some rows of M (the fit targets) for every value of a
grid, either L0 strengths ``lambda_l0`` or keep-K counts, all at once: the training state gets a
leading axis of grid points and one compiled chunk (``engine.run_chunk_impl`` under ``vmap``)
advances them together, with the same initialisation and gate noise for every point, so the
differences along the grid come from lambda (or K) alone. Each fit is then scored on the rows
left out (the held-out targets): the mean squared relative error
``mean(((M_h w - y_h) / (|y_h| + 1))^2)`` of its returned weights, and the grid point with the
smallest held-out error is chosen. This replaces one fit per trial of a hyperparameter search
(microcalibrate tunes lambda with Optuna) by one compiled run; changing the grid values, targets or
held-out rows does not recompile.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import dual, engine, losses, model
from l0jax._src.calibration.diagnostics import CalibrationWarning
from l0jax._src.calibration.distance import DISTANCES, Distance, distance_term
from l0jax._src.calibration.losses import LossType
from l0jax._src.calibration.production import TARGET_ACTIVE_ANNEAL
from l0jax._src.operators import Backend, MatrixOperator, as_operator, is_sparse
from l0jax._src.renamed import DEFAULT_TEMPERATURE, aliased
from l0jax._src.schedules import Schedule

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CalibrationPath:
    """The result of ``calibrate_path``: one calibration per grid point, scored on held-out targets.

    Attributes:
      grid: the grid values, shape (k,): L0 strengths (``kind="lambda_l0"``) or counts K
        (``kind="target_active"``), in the order given.
      kind: ``"lambda_l0"`` or ``"target_active"``.
      weights: the returned weights of each fit, shape (k, n), float32.
      active: households with non-zero weight, shape (k,).
      fit_error: mean squared relative error on the fit targets, shape (k,).
      holdout_error: the same on the held-out targets, shape (k,) (inf for a fit whose loss
        became non-finite).
      holdout_max_error: largest ``|M_h w - y_h| / (|y_h| + 1)`` on the held-out targets, shape (k,).
      best: index of the chosen point: the smallest ``holdout_error`` (with a ``tolerance``, the
        point with the fewest active households among those within it of the smallest).
      fit_rows: indices of the rows of M fitted, shape (m_fit,).
      holdout_rows: indices of the held-out rows, shape (m_holdout,).
      history: per-chunk metrics of the fits: ``epoch`` (chunks,), and ``loss``, ``active``,
        ``max_rel_error`` (on the fit targets), each (k, chunks).
    """

    grid: np.ndarray
    kind: str
    weights: np.ndarray
    active: np.ndarray
    fit_error: np.ndarray
    holdout_error: np.ndarray
    holdout_max_error: np.ndarray
    best: int
    fit_rows: np.ndarray
    holdout_rows: np.ndarray
    history: dict[str, np.ndarray]

    @property
    def best_value(self) -> float:
        """The chosen grid value (a lambda, or a count K)."""
        return self.grid[self.best].item()

    @property
    def best_weights(self) -> np.ndarray:
        """The weights of the chosen point, shape (n,)."""
        return self.weights[self.best]

    def summary(self) -> str:
        """The curve, one line per grid point, the chosen one marked."""
        lines = [f"{self.kind:>14} {'active':>8} {'fit error':>11} {'held-out error':>15}"]
        for i, v in enumerate(self.grid):
            mark = "  <- chosen" if i == self.best else ""
            lines.append(
                f"{v:>14.4g} {self.active[i]:>8d} {self.fit_error[i]:>11.3e} "
                f"{self.holdout_error[i]:>15.3e}{mark}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"CalibrationPath({self.grid.size} {self.kind} values; chosen {self.best_value:g} with "
            f"{self.active[self.best]} active, held-out error {self.holdout_error[self.best]:.3e})"
        )


def _holdout_rows(holdout: Any, m: int, key: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, held-out rows)`` from indices, a boolean mask, or a fraction drawn from ``key``."""
    if isinstance(holdout, (float, np.floating)):
        if not 0 < holdout < 1:
            raise ValueError(f"holdout as a fraction must lie strictly between 0 and 1, got {holdout!r}.")
        count = min(m - 1, max(1, round(holdout * m)))
        held = np.sort(model.host_rng(key, 2).choice(m, size=count, replace=False))
    else:
        arr = np.asarray(holdout)
        if arr.dtype == bool:
            if arr.shape != (m,):
                raise ValueError(
                    f"holdout as a mask must have shape ({m},), one per row of M, got {arr.shape}."
                )
            held = np.flatnonzero(arr)
        elif arr.ndim == 1 and arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() >= m):
                raise ValueError(
                    f"holdout row indices must lie in [0, {m}), got values in [{arr.min()}, {arr.max()}]."
                )
            held = np.unique(arr)
        else:
            raise ValueError(
                "holdout must be row indices (ints), a boolean mask of shape (m,), or a fraction in "
                f"(0, 1), got {holdout!r}."
            )
    if held.size == 0 or held.size == m:
        raise ValueError(
            f"holdout must leave out at least one row of M and keep at least one to fit; it holds out "
            f"{held.size} of {m}."
        )
    return np.setdiff1d(np.arange(m), held), held


def _rows(M: Any, rows: np.ndarray) -> Any:
    if is_sparse(M):
        return sp.csr_matrix(M)[rows]
    return np.asarray(M)[rows]


def _grid(lambdas: ArrayLike | None, counts: ArrayLike | None, n: int) -> tuple[np.ndarray, str]:
    if (lambdas is None) == (counts is None):
        raise ValueError("give exactly one grid: lambdas= (L0 strengths) or counts= (households to keep).")
    if lambdas is not None:
        grid = checks.real_array("lambdas", lambdas)
        if grid.ndim != 1 or grid.size == 0:
            raise ValueError(
                f"lambdas must be a non-empty 1-D sequence of L0 strengths, got shape {grid.shape}."
            )
        checks.check_nonnegative(
            "lambdas", grid, hint="They are L0 penalty strengths, e.g. np.logspace(-6, -2, 8)."
        )
        return grid, "lambda_l0"
    grid = np.asarray(counts)
    if grid.ndim != 1 or grid.size == 0 or grid.dtype.kind not in "iu":
        raise ValueError(
            f"counts must be a non-empty 1-D sequence of integers (households to keep), got {counts!r}."
        )
    if grid.min() < 1 or grid.max() > n:
        raise ValueError(
            f"counts must lie between 1 and the number of households ({n}), got values in "
            f"[{grid.min()}, {grid.max()}]."
        )
    return grid.astype(np.int64), "target_active"


def _path_chunk_impl(
    config: engine.StepConfig,
    states: model.CalibrationState,
    problem: model.Problem,
    budgets: Array,
    num_steps: Array,
):
    """``engine.run_chunk_impl`` for every grid point at once (``budgets``: K per point, keep-K mode)."""

    def one(state, k):
        prob = (
            problem if problem.budget is None else problem._replace(budget=problem.budget._replace(target=k))
        )
        return engine.run_chunk_impl(config, state, prob, num_steps)

    return jax.vmap(one)(states, budgets)


path_chunk = jax.jit(_path_chunk_impl, static_argnums=0)


def _path_finish_impl(config, states, problem, opt_states, num_steps):
    return jax.vmap(lambda s, o: engine.finish_impl(config, s, problem, o, num_steps))(states, opt_states)


path_finish = jax.jit(_path_finish_impl, static_argnums=0)


def _snap(states: model.CalibrationState, counts: np.ndarray, rule: EvalRule) -> model.CalibrationState:
    """Keep-K: every point's multiplier takes the value opening exactly its K gates (``dual.snap_to_budget``)."""
    la = np.array(states.params["log_alpha"])
    temps = np.asarray(engine.current_temperature(states.opt_state))
    hp = states.hparams
    for i, k in enumerate(counts):
        t = float(np.reshape(temps, -1)[i if np.size(temps) > 1 else 0])
        threshold = dual.open_threshold(t, float(hp.gamma[i]), float(hp.zeta[i]), rule)
        shift = dual.snap_to_budget(la[i], int(k), threshold)
        if shift is not None:
            snapped = la[i] - np.float32(shift)
            z = hc.hard_concrete_eval(
                jnp.asarray(snapped), t, gamma=float(hp.gamma[i]), zeta=float(hp.zeta[i]), rule=rule
            )
            if int(np.count_nonzero(np.asarray(z) > 0)) == int(k):
                la[i] = snapped
    return states._replace(params={**states.params, "log_alpha": jnp.asarray(la)})


def _relative_errors(M: Any, weights: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(M @ w - y) / (|y| + 1)`` for each row of weights: shape (k, m)."""
    pred = np.asarray(M @ weights.astype(np.float64).T).T
    return (pred - y) / (np.abs(y) + 1.0)


def calibrate_path(
    M: Any,  # a CalibrationMatrix: Any because the body dispatches on its form at runtime
    targets: ArrayLike,
    *,
    key: jax.Array | int,
    holdout: ArrayLike,
    lambdas: ArrayLike | None = None,
    counts: ArrayLike | None = None,
    epochs: int = 1000,
    lr: float = 0.1,
    loss_type: LossType = "relative",
    init_weights: ArrayLike | None = None,
    init_keep_prob: float = 0.5,
    temperature: Schedule | float = DEFAULT_TEMPERATURE,
    gamma: float = hc.GAMMA,
    zeta: float = hc.ZETA,
    lambda_l2: float = 0.0,
    log_weight_jitter_sd: float = 0.0,
    log_alpha_jitter_sd: float = 0.01,
    distance: Distance | None = None,
    distance_strength: float = 1e-3,
    weight_bounds: tuple[float, float] | None = None,
    target_active_rate: float = 0.05,
    eval_rule: EvalRule = "median",
    polish: bool = True,
    polish_epochs: int | None = None,
    log_every: int = 100,
    backend: Backend = "auto",
    tolerance: float = 0.0,
    beta: float | None = None,
) -> CalibrationPath:
    """Calibrates for every lambda (or keep-K count) of a grid in one compiled run; chooses on held-out targets.

    Each grid point is the fit ``l0jax.calibrate`` would make on the rows of M not held out (same
    arguments, with ``lambda_l0`` from ``lambdas`` or ``target_active`` from ``counts``), all sharing
    the initialisation and gate noise drawn from ``key``. The fits are scored on the held-out rows
    and the point with the smallest held-out error is chosen (see the module docstring).

    Example:
      >>> import numpy as np, l0jax
      >>> rng = np.random.default_rng(0)
      >>> M = rng.uniform(0, 1, (20, 300)) * (rng.uniform(0, 1, (20, 300)) < 0.3)
      >>> y = M @ rng.uniform(0.5, 1.5, 300)
      >>> path = l0jax.calibrate_path(M, y, key=0, lambdas=[1e-4, 1e-2, 1e-1], holdout=[0, 5, 10, 15],
      ...                             lr=0.1, epochs=200)
      >>> bool(path.holdout_error[path.best] == path.holdout_error.min()), path.weights.shape
      (True, (3, 300))

    Args:
      M: matrix (m targets, n households): scipy sparse, NumPy or JAX.
      targets: shape (m,).
      key: a JAX PRNG key or an integer seed (jitter, gate noise, and a random ``holdout`` fraction).
      holdout: the held-out rows: integer row indices, a boolean mask of shape (m,), or a fraction in
        (0, 1) of the rows drawn at random from ``key``.
      lambdas: the L0 strengths to try, shape (k,), >= 0; or
      counts: the numbers of households to keep (keep-K mode), shape (k,) integers in [1, n].
      epochs: training epochs of every fit.
      lr: learning rate (Adam), > 0.
      loss_type: ``"relative"``, ``"relative_abs"`` or ``"mse"``.
      init_weights: starting (design) weights, scalar or shape (n,).
      init_keep_prob: starting keep probability of the gates.
      temperature: the gate temperature: a constant > 0, or a schedule of the step count (see
        ``l0jax.calibrate``).
      gamma: stretch interval lower end.
      zeta: stretch interval upper end.
      lambda_l2: L2 strength.
      log_weight_jitter_sd: jitter of the initial log weights.
      log_alpha_jitter_sd: jitter of the initial gate logits.
      distance: ``"chi2"`` or ``"raking"`` distance to ``init_weights``, or None.
      distance_strength: its multiplier.
      weight_bounds: ``(L, U)`` on ``w / init_weights`` (see ``l0jax.calibrate``).
      target_active_rate: the keep-K dual-ascent step.
      eval_rule: deterministic gate rule.
      polish: refit the active weights of every point after training.
      polish_epochs: polish epochs (default from ``epochs``).
      log_every: epochs per compiled chunk (one history column).
      backend: matrix backend (see ``l0jax.calibrate``).
      tolerance: choose the sparsest point whose held-out error is at most ``(1 + tolerance)``
        times the smallest (0: the smallest; e.g. 0.1 trades 10% of held-out error for sparsity).
      beta: deprecated alias of ``temperature`` (l0-python's name); warns with a
        ``DeprecationWarning``. Give one of the two.

    Returns:
      A ``CalibrationPath`` (the curve, each point's weights, and ``best``).

    Raises:
      ValueError: bad input (grid, holdout, shapes, ...), named.
    """
    from l0jax._src.calibration.fit import default_polish_epochs, targets_vector

    temperature = aliased(
        "calibrate_path",
        "temperature",
        temperature,
        "beta",
        beta,
        given=temperature is not DEFAULT_TEMPERATURE,
    )
    checks.check_choice("loss_type", loss_type, losses.LOSS_TYPES)
    checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
    epochs = checks.check_int_at_least("epochs", epochs, 1)
    log_every = checks.check_int_at_least("log_every", log_every, 1)
    checks.check_positive("lr", lr, hint="It is the learning rate, e.g. 0.1.")
    # A constant temperature is held in the optimizer state (set by init_state); a schedule anneals it.
    held = None if callable(temperature) else temperature
    if held is not None:
        checks.check_positive("temperature", held, hint="It is the gate temperature, e.g. 2/3.")
    checks.check_positive("target_active_rate", target_active_rate)
    checks.check_nonnegative(
        "tolerance", tolerance, hint="It is the relative slack on the smallest held-out error."
    )
    if distance is not None:
        checks.check_choice("distance", distance, DISTANCES)
    if weight_bounds is not None:
        weight_bounds = model.check_weight_bounds(weight_bounds)
    if isinstance(M, MatrixOperator):
        raise TypeError(
            "calibrate_path needs the matrix itself (scipy sparse or dense) to split off the held-out "
            "rows, not an operator."
        )
    hparams = model.make_hyperparams(0.0, lambda_l2, gamma, zeta)
    key = checks.as_key(key)
    shape = getattr(M, "shape", np.shape(M))
    if len(shape) != 2:
        raise ValueError(f"M must be a 2-D matrix (targets x households), got shape {shape}.")
    m, n = int(shape[0]), int(shape[1])
    y = targets_vector(targets, m)
    grid, kind = _grid(lambdas, counts, n)
    fit_rows, held_rows = _holdout_rows(holdout, m, key)
    M_fit, M_held = _rows(M, fit_rows), _rows(M, held_rows)

    op = as_operator(M_fit, backend=backend)
    dt = op.dtype
    y_fit = y[fit_rows]
    problem = model.Problem(
        op=op,
        targets=jnp.asarray(y_fit, dt),
        scale=jnp.asarray(losses.target_scale(y_fit, loss_type), dt),
        weights=jnp.asarray(losses.group_weights(None, fit_rows.size), dt),
    )
    if distance is not None:
        problem = problem._replace(terms=(distance_term(distance, init_weights, n, distance_strength, dt),))
    if weight_bounds is not None:
        problem = problem._replace(bounds=model.make_weight_bounds(weight_bounds, init_weights, n, dt))
    k = grid.size
    if kind == "target_active":
        budget = dual.make_budget(n, rate=target_active_rate, anneal=TARGET_ACTIVE_ANNEAL * epochs)
        problem = problem._replace(budget=budget)
        budgets = jnp.asarray(grid, jnp.float32)
    else:
        budgets = jnp.zeros((k,), jnp.float32)
    config = engine.StepConfig(tx=engine.make_optimizer(None, temperature), eval_rule=eval_rule)

    with jax.numpy_dtype_promotion("standard"):
        params = model.init_params(
            key,
            n,
            init_weights=init_weights,
            init_keep_prob=init_keep_prob,
            log_weight_jitter_sd=log_weight_jitter_sd,
            log_alpha_jitter_sd=log_alpha_jitter_sd,
            weight_bounds=weight_bounds,
        )
        state = engine.init_state(config, params, key, hparams, lr=lr, temperature=held)
        if kind == "target_active":
            state = state._replace(dual=dual.init_dual())
        states = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k, *jnp.shape(x))), state)
        if kind == "lambda_l0":
            states = states._replace(
                hparams=states.hparams._replace(lambda_l0=jnp.asarray(grid, jnp.float32))
            )

        rows, done, ok = [], 0, np.ones(k, bool)
        while done < epochs:
            todo = min(log_every, epochs - done)
            states, stats = path_chunk(config, states, problem, budgets, jnp.asarray(todo, jnp.int32))
            stats = jax.device_get(stats)
            ok &= np.asarray(stats["ok"], bool)
            done += todo
            rows.append(
                {
                    "epoch": done,
                    "loss": stats["loss"],
                    "active": stats["active"],
                    "max_rel_error": stats["max_rel_error"],
                }
            )
        if kind == "target_active":
            states = _snap(states, grid, eval_rule)
        p_epochs = (
            0
            if not polish or "log_alpha" not in params
            else (
                default_polish_epochs(epochs)
                if polish_epochs is None
                else checks.check_int_at_least("polish_epochs", polish_epochs, 1)
            )
        )
        opt = engine.polish_start(states.params["log_weight"][0], lr)
        opt = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k, *jnp.shape(x))), opt)
        weights = np.asarray(path_finish(config, states, problem, opt, jnp.asarray(p_epochs, jnp.int32))[0])
    if weight_bounds is not None:
        weights = np.stack([model.round_into_bounds(w, init_weights, weight_bounds) for w in weights])
    if not ok.all():
        warnings.warn(
            f"the loss became non-finite for grid points {np.flatnonzero(~ok).tolist()} ({kind} = "
            f"{grid[~ok].tolist()}); they are scored as infinitely bad. Lower lr to fit them.",
            CalibrationWarning,
            stacklevel=2,
        )
    fit_err = _relative_errors(M_fit, weights, y_fit)
    held_err = _relative_errors(M_held, weights, y[held_rows])
    holdout_error = np.where(ok, np.mean(held_err**2, axis=1), np.inf)
    holdout_error = np.where(np.isfinite(holdout_error), holdout_error, np.inf)
    active = np.count_nonzero(weights > 0, axis=1)
    history = {"epoch": np.array([r["epoch"] for r in rows])}
    for name in ("loss", "active", "max_rel_error"):
        history[name] = np.stack([np.asarray(r[name]) for r in rows], axis=1)
    return CalibrationPath(
        grid=grid,
        kind=kind,
        weights=weights,
        active=active,
        fit_error=np.mean(fit_err**2, axis=1),
        holdout_error=holdout_error,
        holdout_max_error=np.max(np.abs(held_err), axis=1),
        best=choose(holdout_error, active, tolerance),
        fit_rows=fit_rows,
        holdout_rows=held_rows,
        history=history,
    )


def choose(holdout_error: np.ndarray, active: np.ndarray, tolerance: float = 0.0) -> int:
    """The chosen grid point: among points within ``(1 + tolerance)`` of the smallest held-out error,
    the one with the fewest active households (ties: the smaller error).
    """
    best = float(np.min(holdout_error))
    within = np.flatnonzero(holdout_error <= (1 + tolerance) * best)
    return int(min(within, key=lambda i: (active[i], holdout_error[i])))
