"""One calibration fit: its settings (``FitSettings``) and the run from arguments to result (``run_fit``).

``calibrate`` (``api``), ``SparseCalibrationWeights.fit`` (``estimator``) and ``calibrate_path``
(``path``) share this: argument checks, the matrix operator or the sharded layout, the problem,
the initial or continued state, the production run around the loop, the polish, and the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import blocks, diagnostics, engine, losses, model, production, sharding
from l0jax._src.calibration.losses import LossType
from l0jax._src.calibration.result import CalibrationResult
from l0jax._src.calibration.sharding import DevicesLike
from l0jax._src.host_operators import row_block
from l0jax._src.operators import Backend, MatrixOperator, as_operator, is_sparse
from l0jax._src.renamed import DEFAULT_TEMPERATURE
from l0jax._src.schedules import Schedule

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitSettings:
    """Every setting of one calibration fit, as ``l0jax.calibrate`` documents them.

    ``calibrate`` and ``SparseCalibrationWeights.fit`` keep their keyword arguments (the public
    API) and hand them to ``run_fit`` in one object, so that the settings are declared once here
    rather than repeated by every function on the way.
    """

    lambda_l0: float | None = None
    lambda_l2: float = 0.0
    lr: float = 0.01
    epochs: int = 1000
    loss_type: LossType = "mse"
    init_weights: ArrayLike | None = None
    init_keep_prob: ArrayLike = 0.5
    gamma: float = hc.GAMMA
    zeta: float = hc.ZETA
    log_weight_jitter_sd: float = 0.0
    log_alpha_jitter_sd: float = 0.01
    use_gates: bool = True
    target_groups: ArrayLike | None = None
    normalize_groups: bool = True
    group_multipliers: Mapping[Any, float] | None = None
    optimizer: optax.GradientTransformation | None = None
    temperature: Schedule | float = DEFAULT_TEMPERATURE
    eval_rule: EvalRule = "median"
    polish: bool = True
    polish_epochs: int | None = None
    log_every: int = 100
    verbose: bool = False
    backend: Backend = "auto"
    warn_targets: bool = True
    weight_bounds: tuple[float, float] | None = None
    devices: DevicesLike = None
    options: production.ProductionOptions | None = None


def targets_vector(targets: Any, m: int) -> np.ndarray:
    y = checks.real_array("targets", targets)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.shape != (m,):
        raise ValueError(
            f"targets must have shape ({m},), one value per row of M (M has {m} rows), got shape {y.shape}."
        )
    checks.check_finite("targets", y)
    return y


def default_polish_epochs(epochs: int) -> int:
    """Polish epochs when not given: a fifth of the training epochs, between 100 and 1000."""
    return int(min(1000, max(100, epochs // 5)))


def host_predict(M: Any, weights: np.ndarray) -> np.ndarray:
    """``M @ weights`` in float64 on the host (one product; no operator needed)."""
    w = np.asarray(weights, np.float64)
    if isinstance(M, MatrixOperator):
        return np.asarray(M.matvec(jnp.asarray(weights)), np.float64)
    if is_sparse(M):
        csr = M if M.format == "csr" else M.tocsr()
        if csr.dtype == np.float64:
            return np.asarray(csr @ w).reshape(-1)
        # scipy multiplies float32 data by a float64 vector through a float64 copy of the data:
        # blocks of rows keep that copy to one block (a full copy is M's size again on 80M nonzeros).
        out = np.empty(csr.shape[0])
        step = max(1, int(csr.shape[0] * 4_000_000 / max(csr.nnz, 1)))
        for lo in range(0, csr.shape[0], step):
            hi = min(csr.shape[0], lo + step)
            out[lo:hi] = row_block(csr, lo, hi) @ w
        return out
    return np.asarray(np.asarray(M, np.float64) @ w)


def check_state(state: model.CalibrationState, config: engine.StepConfig, n: int, use_gates: bool) -> None:
    if not isinstance(state, model.CalibrationState):
        # The library's rule: every bad argument is a ValueError naming it.
        raise ValueError(f"state must be a CalibrationState (result.state), got {type(state).__name__}.")
    if state.params["log_weight"].shape != (n,):
        raise ValueError(
            f"state is for {state.params['log_weight'].shape[0]} households but M has {n} columns."
        )
    if ("log_alpha" in state.params) != use_gates:
        raise ValueError(
            f"state was made with use_gates={not use_gates}; pass the same use_gates to continue."
        )
    expected = jax.tree_util.tree_structure(jax.eval_shape(config.tx.init, state.params))
    if jax.tree_util.tree_structure(state.opt_state) != expected:
        raise ValueError("state was made with another optimizer; pass the same optimizer= to continue it.")


def run_fit(
    M: Any,
    targets: ArrayLike,
    s: FitSettings,
    *,
    key: jax.Array | int,
    state: model.CalibrationState | None = None,
    n_features: int | None = None,
    init_log_alpha: Any = None,
) -> CalibrationResult:
    """One calibration fit from the arguments to the result: ``calibrate``, ``SparseCalibrationWeights.fit``.

    Args:
      M: matrix of shape (m, n), or column blocks (see ``l0jax.calibrate``).
      targets: target values, shape (m,).
      s: every setting of the fit.
      key: a JAX PRNG key or an integer seed.
      state: a ``CalibrationState`` to continue from, or None.
      n_features: the model's household count when called by ``SparseCalibrationWeights`` (its
        errors then use l0-python's argument names).
      init_log_alpha: starting gate logits, shape (n,) (the object API draws them at construction).

    Returns:
      A ``CalibrationResult``.
    """
    # Validate every cheap argument before touching the (possibly large) matrix.
    lambda_l0, epochs, log_every = s.lambda_l0, s.epochs, s.log_every
    polish_epochs, weight_bounds, options = s.polish_epochs, s.weight_bounds, s.options
    if lambda_l0 is None:
        lambda_l0 = 0.0 if options is not None and options.target_active is not None else 0.01
    checks.check_choice("loss_type", s.loss_type, losses.LOSS_TYPES)
    checks.check_choice("eval_rule", s.eval_rule, hc.EVAL_RULES)
    epochs = checks.check_int_at_least("epochs", epochs, 1)
    log_every = checks.check_int_at_least(
        "verbose_freq" if n_features is not None else "log_every", log_every, 1
    )
    checks.check_positive("lr", s.lr, hint="It is the learning rate, e.g. 0.01.")
    if not callable(s.temperature):
        checks.check_positive("temperature", s.temperature, hint="It is the gate temperature, e.g. 2/3.")
    hparams = model.make_hyperparams(lambda_l0, s.lambda_l2, s.gamma, s.zeta)
    if polish_epochs is not None:
        polish_epochs = checks.check_int_at_least("polish_epochs", polish_epochs, 1)
    key = checks.as_key(key)
    if weight_bounds is not None:
        weight_bounds = model.check_weight_bounds(weight_bounds)
    if options is not None and not options.active():
        options = None
    if options is not None:
        production.check_options(options, use_gates=s.use_gates)
        if options.resume and state is not None:
            raise ValueError(
                "resume=True continues a checkpoint and cannot also continue a fitted state (state=, or a "
                "second fit of the same SparseCalibrationWeights); use one or the other."
            )

    column_input = blocks.is_column_input(M)
    layout = None
    if isinstance(M, sharding.ShardedOperator):  # built once by sharding.shard_operator, fitted many times
        if s.devices is not None:
            raise ValueError("M is already split over devices (a ShardedOperator); leave devices=None.")
        layout, op = M.layout, M
        m, n = M.shape[0], M.layout.n
    elif s.devices is not None or column_input:  # households split over a mesh (sharding.py)
        if isinstance(M, MatrixOperator):
            raise ValueError(
                "devices= needs the matrix itself (scipy sparse, NumPy, JAX or ColumnBlocks) to split it "
                "over the devices, not an operator from as_operator."
            )
        rows, n = blocks.shape_of(M)
        m = rows if rows is not None else int(np.size(targets))
        layout = sharding.resolve_devices(1 if s.devices is None else s.devices, n)
    else:
        op = as_operator(M, backend=s.backend)
        m, n = op.shape
    if n_features is not None and n != n_features:
        raise ValueError(f"M has {n} columns (households) but the model has n_features={n_features}.")
    y = targets_vector(targets, m)
    if s.warn_targets and not isinstance(M, MatrixOperator) and not column_input:
        diagnostics.check_targets(M, y, loss_type=s.loss_type, far_factor=None)
    scale = losses.target_scale(y, s.loss_type)
    weights = losses.group_weights(
        s.target_groups, m, normalize_groups=s.normalize_groups, group_multipliers=s.group_multipliers
    )
    wants_fingerprint = options is not None and options.checkpoint_path is not None
    if layout is not None and not isinstance(M, sharding.ShardedOperator):
        op = sharding.shard_operator(M, layout, m=m, backend=s.backend, fingerprint=wants_fingerprint)
    dt = op.dtype
    problem = model.Problem(
        op=op, targets=jnp.asarray(y, dt), scale=jnp.asarray(scale, dt), weights=jnp.asarray(weights, dt)
    )
    if weight_bounds is not None:
        problem = problem._replace(bounds=model.make_weight_bounds(weight_bounds, s.init_weights, n, dt))
    config = engine.StepConfig(tx=engine.make_optimizer(s.optimizer, s.temperature), eval_rule=s.eval_rule)
    # A constant temperature is held in the optimizer state (set below); a schedule anneals it.
    held = None if callable(s.temperature) else s.temperature
    run = None
    if options is not None:  # keep-K, distance, aggregates, checkpoints, callbacks (production.py)
        settings = production.settings_of(
            lr=s.lr,
            lambda_l0=lambda_l0,
            lambda_l2=s.lambda_l2,
            temperature=held,
            epochs=epochs,
            loss_type=s.loss_type,
            use_gates=s.use_gates,
            eval_rule=s.eval_rule,
            weight_bounds=weight_bounds,
        )
        run = production.Run(
            options,
            M=M,
            targets=y,
            n=n,
            init_weights=s.init_weights,
            dtype=dt,
            settings=settings,
            layout=layout,
            fingerprint=op.fingerprint(y) if isinstance(op, sharding.ShardedOperator) else None,
        )
        problem = run.extend_problem(problem)
    if layout is not None:
        problem = sharding.shard_problem(problem, layout)
    continuing = state is not None

    # optax's Adam computes decay**count with an int32 count, which strict dtype promotion rejects;
    # the library's compiled loop therefore traces under standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        if state is None:
            # One key serves both: the initial jitter draws from host_rng(key, 0 and 1), the
            # epochs' gates from gate_noise(key, n, epoch).
            params = model.init_params(
                key,
                n,
                init_weights=s.init_weights,
                init_keep_prob=s.init_keep_prob,
                log_weight_jitter_sd=s.log_weight_jitter_sd,
                log_alpha_jitter_sd=s.log_alpha_jitter_sd,
                use_gates=s.use_gates,
                log_alpha=init_log_alpha,
                weight_bounds=weight_bounds,
            )
            state = engine.init_state(config, params, key, hparams, lr=s.lr, temperature=held)
        else:
            check_state(state, config, n, s.use_gates)
            opt_state = engine.set_learning_rate(state.opt_state, s.lr)
            if held is not None:
                opt_state = engine.set_temperature(opt_state, held)
            state = state._replace(opt_state=opt_state, hparams=hparams)

        todo = epochs
        if run is not None:
            state = run.prepare(state)
            if not continuing:
                state = run.resume(state, lr=s.lr, temperature=held)
            todo = run.remaining(state, epochs, continuing)
        if layout is not None:
            state = layout.place(state)  # padded and split over the mesh
        if run is not None:
            run.start(config, problem, state)
        if todo > 0:
            try:
                state, history = engine.fit(
                    config,
                    state,
                    problem,
                    todo,
                    chunk=log_every,
                    verbose=s.verbose,
                    callback=None if run is None else run.callback,
                )
            except engine.NonFiniteLossError as err:
                if layout is not None:  # the caller continues from an unpadded state, on any layout
                    err.state = layout.unplace(err.state)
                raise
        else:
            history = production.empty_history()
        if run is not None:
            history = run.finish(state, history)
            state = run.snap(state, config)  # keep-K: exactly K gates open before the polish

        p_epochs = 0
        if s.polish and s.use_gates:
            p_epochs = default_polish_epochs(epochs) if polish_epochs is None else polish_epochs
        w, gates_np, end, start = engine.finish(config, state, problem, p_epochs, s.lr)
        polish_info = {"epochs": p_epochs, "start": start, "end": end} if p_epochs else None
        if layout is not None:
            w, gates_np = w[:n], gates_np[:n]
            state = layout.unplace(state)
        if weight_bounds is not None:
            w = model.round_into_bounds(w, s.init_weights, weight_bounds)
        if column_input or isinstance(M, sharding.ShardedOperator):
            assert layout is not None  # column input and sharded operators always have one
            predictions = sharding.block_predictions(M, problem.op, w, layout)
        else:
            predictions = host_predict(M, w)
    return CalibrationResult(
        weights=w,
        gates=gates_np,
        active=np.flatnonzero(w > 0),
        predictions=predictions,
        targets=y,
        history=history,
        state=state,
        loss_type=s.loss_type,
        polish=polish_info,
    )
