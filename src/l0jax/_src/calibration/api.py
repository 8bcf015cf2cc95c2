"""The two entry points of survey calibration: ``calibrate`` (functional) and ``SparseCalibrationWeights``.

``SparseCalibrationWeights`` takes l0-python's constructor and ``fit`` arguments, so a user of
l0-python ports by changing the import. Differences, all deliberate:

* No global RNG: ``seed=None`` means seed 0 (l0-python then used torch's global generator); every
  draw comes from ``seed`` or ``key``. The same seed gives bitwise the same weights on CPU.
* Matrices are never cached by shape: a second matrix of the same shape and nnz gets its own
  predictions (l0-python returns the first matrix's).
* The returned deterministic weights are polished (``polish=True``): the active set chosen by the
  gates is frozen and its weights refitted with the deterministic gates, so they hit the targets at
  least as well as the sampled weights did during training (in l0-python they hit them worse).
* Calling ``fit`` again continues the same run (optimizer moments, step count, key) without
  re-jittering the weights; l0-python restarts Adam and adds the jitter again.
* Gate logits are not clamped to +-20 (the core is finite for any log_alpha), and there is a loss
  well defined for negative targets, ``loss_type="relative_abs"``.
* Results are NumPy arrays (float32 weights, float64 predictions), not torch tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.calibration import blocks, diagnostics, engine, losses, model, production, sharding
from l0jax._src.calibration.result import CalibrationResult
from l0jax._src.operators import BACKENDS, MatrixOperator, as_operator, row_block

Array = jax.Array


def _as_key(key: Any, name: str = "key") -> Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise ValueError(f"{name} must be a JAX PRNG key (jax.random.key(seed)) or an integer seed, got {key!r}.")


def _targets(targets: Any, m: int) -> np.ndarray:
    y = checks.real_array("targets", targets)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.shape != (m,):
        raise ValueError(
            f"targets must have shape ({m},), one value per row of M (M has {m} rows), got shape {y.shape}."
        )
    checks.check_finite("targets", y)
    return y


# The object API's one-off evaluations, compiled once per shape rather than op by op.
_deterministic_gates = jax.jit(model.deterministic_gates, static_argnums=3)
_sampled_gates = jax.jit(model.sampled_gates)
_gated_weights = jax.jit(model.gated_weights)
_expected_active = jax.jit(model.expected_active)


def default_polish_epochs(epochs: int) -> int:
    """Polish epochs when not given: a fifth of the training epochs, between 100 and 1000."""
    return int(min(1000, max(100, epochs // 5)))


def _host_predict(M: Any, weights: np.ndarray) -> np.ndarray:
    """``M @ weights`` in float64 on the host (one product; no operator needed)."""
    w = np.asarray(weights, np.float64)
    if isinstance(M, MatrixOperator):
        return np.asarray(M.matvec(jnp.asarray(weights)), np.float64)
    if sp.issparse(M):
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


def _check_state(state: model.CalibrationState, config: engine.StepConfig, n: int, use_gates: bool) -> None:
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


def _calibrate(
    M: Any,
    targets: Any,
    *,
    key: Any,
    state: model.CalibrationState | None,
    init_log_alpha: Any,
    init_weights: Any,
    init_keep_prob: Any,
    beta: float,
    gamma: float,
    zeta: float,
    log_weight_jitter_sd: float,
    log_alpha_jitter_sd: float,
    use_gates: bool,
    lambda_l0: float | None,
    lambda_l2: float,
    lr: float,
    epochs: int,
    loss_type: str,
    target_groups: Any,
    normalize_groups: bool,
    group_multipliers: Mapping[Any, float] | None,
    optimizer: optax.GradientTransformation | None,
    temperature: Any,
    eval_rule: str,
    polish: bool,
    polish_epochs: int | None,
    log_every: int,
    verbose: bool,
    backend: str,
    n_features: int | None = None,
    options: production.ProductionOptions | None = None,
    warn_targets: bool = True,
    weight_bounds: tuple[float, float] | None = None,
    devices: Any = None,
) -> CalibrationResult:
    # Validate every cheap argument before touching the (possibly large) matrix.
    if lambda_l0 is None:
        lambda_l0 = 0.0 if options is not None and options.target_active is not None else 0.01
    checks.check_choice("loss_type", loss_type, losses.LOSS_TYPES)
    checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
    epochs = checks.check_int_at_least("epochs", epochs, 1)
    log_every = checks.check_int_at_least(
        "verbose_freq" if n_features is not None else "log_every", log_every, 1
    )
    checks.check_positive("lr", lr, hint="It is the learning rate, e.g. 0.01.")
    checks.check_positive("beta", beta, hint="It is the gate temperature, e.g. 2/3.")
    hparams = model.make_hyperparams(lambda_l0, lambda_l2, gamma, zeta)
    if polish_epochs is not None:
        polish_epochs = checks.check_int_at_least("polish_epochs", polish_epochs, 1)
    if temperature is not None and not callable(temperature):
        checks.check_positive("temperature", temperature, hint="A constant temperature, or a schedule.")
    key = _as_key(key)
    if weight_bounds is not None:
        weight_bounds = model.check_weight_bounds(weight_bounds)
    if options is not None and not options.active():
        options = None
    if options is not None:
        production.check_options(options, use_gates=use_gates)
        if options.resume and state is not None:
            raise ValueError(
                "resume=True continues a checkpoint and cannot also continue a fitted state (state=, or a "
                "second fit of the same SparseCalibrationWeights); use one or the other."
            )

    column_input = blocks.is_column_input(M)
    layout = None
    if isinstance(M, sharding.ShardedOperator):  # built once by sharding.shard_operator, fitted many times
        if devices is not None:
            raise ValueError("M is already split over devices (a ShardedOperator); leave devices=None.")
        layout, op = M.layout, M
        m, n = M.shape[0], M.layout.n
    elif devices is not None or column_input:  # households split over a mesh (sharding.py)
        if isinstance(M, MatrixOperator):
            raise ValueError(
                "devices= needs the matrix itself (scipy sparse, NumPy, JAX or ColumnBlocks) to split it "
                "over the devices, not an operator from as_operator."
            )
        rows, n = blocks.shape_of(M)
        m = rows if rows is not None else int(np.size(targets))
        layout = sharding.resolve_devices(1 if devices is None else devices, n)
    else:
        op = as_operator(M, backend=backend)
        m, n = op.shape
    if n_features is not None and n != n_features:
        raise ValueError(f"M has {n} columns (households) but the model has n_features={n_features}.")
    y = _targets(targets, m)
    if warn_targets and not isinstance(M, MatrixOperator) and not column_input:
        diagnostics.check_targets(M, y, loss_type=loss_type, far_factor=None)
    scale = losses.target_scale(y, loss_type)
    weights = losses.group_weights(
        target_groups, m, normalize_groups=normalize_groups, group_multipliers=group_multipliers
    )
    wants_fingerprint = options is not None and options.checkpoint_path is not None
    if layout is not None and not isinstance(M, sharding.ShardedOperator):
        op = sharding.shard_operator(M, layout, m=m, backend=backend, fingerprint=wants_fingerprint)
    dt = op.dtype
    problem = model.Problem(
        op=op, targets=jnp.asarray(y, dt), scale=jnp.asarray(scale, dt), weights=jnp.asarray(weights, dt)
    )
    if weight_bounds is not None:
        problem = problem._replace(bounds=model.make_weight_bounds(weight_bounds, init_weights, n, dt))
    config = engine.StepConfig(tx=engine.make_optimizer(optimizer, temperature), eval_rule=eval_rule)
    const_beta = beta if temperature is None else (None if callable(temperature) else temperature)
    run = None
    if options is not None:  # keep-K, distance, aggregates, checkpoints, callbacks (production.py)
        settings = production.settings_of(
            lr=lr,
            lambda_l0=lambda_l0,
            lambda_l2=lambda_l2,
            beta=const_beta,
            epochs=epochs,
            loss_type=loss_type,
            use_gates=use_gates,
            eval_rule=eval_rule,
            weight_bounds=weight_bounds,
        )
        run = production.Run(
            options,
            M=M,
            targets=y,
            n=n,
            init_weights=init_weights,
            dtype=dt,
            settings=settings,
            layout=layout,
            fingerprint=None if layout is None else op.fingerprint(y),
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
                init_weights=init_weights,
                init_keep_prob=init_keep_prob,
                log_weight_jitter_sd=log_weight_jitter_sd,
                log_alpha_jitter_sd=log_alpha_jitter_sd,
                use_gates=use_gates,
                log_alpha=init_log_alpha,
                weight_bounds=weight_bounds,
            )
            state = engine.init_state(config, params, key, hparams, lr=lr, beta=const_beta)
        else:
            _check_state(state, config, n, use_gates)
            opt_state = engine.set_learning_rate(state.opt_state, lr)
            if const_beta is not None:
                opt_state = engine.set_temperature(opt_state, const_beta)
            state = state._replace(opt_state=opt_state, hparams=hparams)

        todo = epochs
        if run is not None:
            state = run.prepare(state)
            if not continuing:
                state = run.resume(state, lr=lr, beta=const_beta)
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
                    verbose=verbose,
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
        if polish and use_gates:
            p_epochs = default_polish_epochs(epochs) if polish_epochs is None else polish_epochs
        w, gates_np, end, start = engine.finish(config, state, problem, p_epochs, lr)
        polish_info = {"epochs": p_epochs, "start": start, "end": end} if p_epochs else None
        if layout is not None:
            w, gates_np = w[:n], gates_np[:n]
            state = layout.unplace(state)
        if weight_bounds is not None:
            w = model.round_into_bounds(w, init_weights, weight_bounds)
        if column_input or isinstance(M, sharding.ShardedOperator):
            predictions = sharding.block_predictions(M, problem.op, w, layout)
        else:
            predictions = _host_predict(M, w)
    return CalibrationResult(
        weights=w,
        gates=gates_np,
        active=np.flatnonzero(w > 0),
        predictions=predictions,
        targets=y,
        history=history,
        state=state,
        loss_type=loss_type,
        polish=polish_info,
    )


def calibrate(
    M: Any,
    targets: Any,
    *,
    key: Any,
    lambda_l0: float | None = None,
    lambda_l2: float = 0.0,
    lr: float = 0.01,
    epochs: int = 1000,
    loss_type: str = "mse",
    init_weights: Any = None,
    init_keep_prob: Any = 0.5,
    beta: float = 2 / 3,
    gamma: float = hc.GAMMA,
    zeta: float = hc.ZETA,
    log_weight_jitter_sd: float = 0.0,
    log_alpha_jitter_sd: float = 0.01,
    use_gates: bool = True,
    target_groups: Any = None,
    normalize_groups: bool = True,
    group_multipliers: Mapping[Any, float] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    temperature: Any = None,
    eval_rule: str = "median",
    polish: bool = True,
    polish_epochs: int | None = None,
    log_every: int = 100,
    verbose: bool = False,
    backend: str = "auto",
    state: model.CalibrationState | None = None,
    target_active: int | float | None = None,
    target_active_rate: float = 0.05,
    distance: str | None = None,
    distance_strength: float = 1e-3,
    aggregates: Sequence[tuple[Any, Any, float]] | None = None,
    tol: float | None = None,
    callbacks: Sequence[Callable[[Any], Any]] = (),
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    warn_targets: bool = True,
    weight_bounds: tuple[float, float] | None = None,
    devices: Any = None,
) -> CalibrationResult:
    """Finds sparse non-negative household weights ``w`` with ``M @ w`` close to ``targets``.

    ``w = exp(log_weight) * z`` with hard-concrete gates ``z``; the loss is the data loss plus
    ``lambda_l0`` times the expected number of open gates plus ``lambda_l2 * sum(exp(log_weight)**2)``,
    minimised by Adam (or ``optimizer``) in one compiled loop. Afterwards (``polish=True``) the
    active set of the deterministic gates is frozen and its weights are refitted with those gates,
    so the returned weights are the ones that hit the targets.

    Example:
      >>> import numpy as np, scipy.sparse as sp, l0jax
      >>> M = sp.random(50, 400, density=0.3, format="csr", random_state=np.random.default_rng(0))
      >>> y = M @ np.random.default_rng(1).uniform(0, 2, 400)
      >>> res = l0jax.calibrate(M, y, key=0, lambda_l0=1e-4, lr=0.1, epochs=500, loss_type="relative")
      >>> bool((res.weights >= 0).all())
      True

    Args:
      M: matrix of shape (m targets, n households): scipy sparse (CSR/CSC/COO, matrix or array),
        NumPy or JAX dense (nested lists too); checked once (2-D, non-empty, real, finite). Or
        column blocks: a list of matrices (one per block of consecutive households) or
        ``l0jax.ColumnBlocks`` (blocks built on demand, or read from a folder of ``.npz`` files),
        which are split over ``devices`` without ever assembling M.
      targets: target values, shape (m,).
      key: a JAX PRNG key or an integer seed; all randomness (jitter, gate noise) comes from it.
      lambda_l0: L0 penalty strength (cost of each expected open gate), >= 0; None means 0.01, or 0
        with ``target_active`` (the budget then sets the count).
      lambda_l2: L2 strength on ``exp(log_weight)``, >= 0.
      lr: learning rate of the default Adam (and of the polish), > 0.
      epochs: training epochs (full-batch gradient steps), >= 1.
      loss_type: ``"mse"``, ``"relative"`` (divides residuals by ``y + 1``, as l0-python) or
        ``"relative_abs"`` (by ``|y| + 1``, defined for negative targets).
      init_weights: starting weights, None (all 1), a scalar or shape (n,), >= 0.
      init_keep_prob: starting keep probability of the gates, scalar or shape (n,), in [0, 1]
        (clipped into (0, 1)).
      beta: gate temperature (when ``temperature`` is None), > 0.
      gamma: stretch interval lower end, < 0.
      zeta: stretch interval upper end, > 1.
      log_weight_jitter_sd: sd of Gaussian jitter added to the initial log weights.
      log_alpha_jitter_sd: sd of Gaussian jitter added to the initial gate logits.
      use_gates: False fits plain positive weights (no gates, no L0 term).
      target_groups: integer group id per target, shape (m,): see ``normalize_groups``.
      normalize_groups: weight each target by ``1 / size of its group`` so every group counts once.
      group_multipliers: {group id: factor} scaling the loss of whole groups; needs ``target_groups``.
      optimizer: an optax transformation for the parameters (default: Adam at ``lr``). A new object
        compiles anew; reuse the object to reuse the compiled loop.
      temperature: None (constant ``beta``), a constant, or a schedule such as
        ``l0jax.temperature_schedule(2.0, 0.5, epochs)`` (annealed by ``anneal_temperature``).
      eval_rule: rule of the deterministic gates, ``"median"`` or ``"paper"``.
      polish: refit the active weights with frozen deterministic gates after training.
      polish_epochs: Adam steps of the polish; default ``default_polish_epochs(epochs)``.
      log_every: epochs per compiled chunk: one history row and one progress-bar update each.
      verbose: show a tqdm progress bar (loss, mean and max relative error, active count).
      backend: how products with M run: ``"auto"`` (chosen from the shape, density and device
        kind), ``"dense"``, ``"sparse"``, ``"ell"`` or ``"scipy"`` (CPU only).
      state: a ``CalibrationState`` (``result.state``) to continue from: its parameters, optimizer
        moments, key and step count are kept (no new jitter); the lambdas, ``lr`` and ``beta`` given
        here replace the old ones. ``init_*``, jitter and ``key`` are then not used.
      target_active: keep K households: an int K, or a float in (0, 1) for a fraction of them. The
        multiplier of the budget "K open gates" is adapted by dual ascent after every epoch and acts
        as an offset of the gate logits (``l0jax._src.calibration.dual``); the budget falls from all
        households to K over the first half of the epochs; it ends within a few percent of K, and
        the multiplier's final value opens exactly the K gates with the largest logits before the
        polish. No lambda search.
      target_active_rate: the dual-ascent step of the budget's multiplier, > 0.
      distance: ``"chi2"`` (linear/GREG) or ``"raking"`` (Kullback-Leibler): adds
        ``distance_strength * D(w, init_weights) / sum(init_weights)`` to the objective, keeping the
        weights close to the design weights ``init_weights`` (which must then be > 0). With a small
        strength, ``use_gates=False`` and enough epochs this reproduces textbook calibration.
      distance_strength: the multiplier of the distance, >= 0.
      aggregates: hierarchical consistency: a list of ``(A, aggregate_targets, lambda)``, ``A`` of
        shape (k, m) mapping the targets to k aggregates (e.g. districts to states); each adds
        ``lambda * sum(((A @ M @ w - t) / (|t| + 1))**2)`` without adding rows to M.
      tol: stop early at the first chunk end whose deterministic weights have every relative error
        ``|pred - y| / (|y| + 1)`` <= ``tol`` (and, with ``target_active``, the count within 5%).
      callbacks: functions called at every chunk end (every ``log_every`` epochs) with a
        ``ChunkInfo`` (``epoch``, ``row``, ``state``, ``targets``, ``predictions()``); returning
        True stops the fit. ``l0jax.CsvLog`` writes microcalibrate's per-epoch CSV log.
      checkpoint_path: file (``.npz``) to which the full training state is written atomically,
        every ``checkpoint_every`` epochs and at the end of training. An existing file is never
        overwritten by a new run: pass ``resume=True`` to continue it.
      checkpoint_every: epochs between checkpoints (written at the first chunk end at or after
        each multiple); default every chunk.
      resume: continue from ``checkpoint_path`` if it exists (else start and warn): ``epochs`` is
        then the total of the run, and the result equals an uninterrupted run bitwise. Another M
        or other targets raise ``CheckpointError``; changed lr or lambdas warn.
      warn_targets: warn (``CalibrationWarning``) about targets no non-negative weights reach and
        negative targets under ``loss_type="relative"`` (for a whole matrix; not for column blocks).
      weight_bounds: ``(L, U)`` with ``0 <= L < U``: every household's ungated weight stays within
        ``[L d, U d]`` (d = ``init_weights``, 1 if None) throughout training and in the returned
        weights, where its gate is open. Held exactly by the parameterisation
        ``w = d (L + (U - L) sigmoid(theta)) * z`` (``theta`` is then what ``log_weight`` holds), not
        by a penalty; an open deterministic gate then counts fully (the returned gates are 0 or 1).
        Training starts at ``w = d``. Pass the same bounds when continuing a state.
      devices: None (one device), or the devices to split the households over: an int (the first
        N of ``jax.devices()``), a sequence of ``jax.Device``, or a 1-D ``jax.sharding.Mesh``.
        Each device holds a contiguous block of households and its columns of M; the targets
        sums meet in one ``psum``. Results equal the one-device run up to float32 summation
        order (the gate noise is the same); ``result.state`` and checkpoints do not depend on the
        layout. In a multi-process run (``jax.distributed.initialize``) every process makes the
        same call with the same ``devices``, and builds only its own devices' columns.

    Returns:
      A ``CalibrationResult``.

    Raises:
      ValueError: bad input (NaN/inf in M or targets, mismatched shapes, negative lambdas,
        epochs < 1, unknown loss_type, ...), with the argument's name.
      NonFiniteLossError: (a ``FloatingPointError``) the loss became non-finite; it carries the
        epoch and the last finite state.
    """
    return _calibrate(
        M,
        targets,
        key=key,
        state=state,
        init_log_alpha=None,
        init_weights=init_weights,
        init_keep_prob=init_keep_prob,
        beta=beta,
        gamma=gamma,
        zeta=zeta,
        log_weight_jitter_sd=log_weight_jitter_sd,
        log_alpha_jitter_sd=log_alpha_jitter_sd,
        use_gates=use_gates,
        lambda_l0=lambda_l0,
        lambda_l2=lambda_l2,
        lr=lr,
        epochs=epochs,
        loss_type=loss_type,
        target_groups=target_groups,
        normalize_groups=normalize_groups,
        group_multipliers=group_multipliers,
        optimizer=optimizer,
        temperature=temperature,
        eval_rule=eval_rule,
        polish=polish,
        polish_epochs=polish_epochs,
        log_every=log_every,
        verbose=verbose,
        backend=backend,
        warn_targets=warn_targets,
        devices=devices,
        options=production.ProductionOptions(
            target_active=target_active,
            target_active_rate=target_active_rate,
            distance=distance,
            distance_strength=distance_strength,
            aggregates=aggregates,
            tol=tol,
            callbacks=tuple(callbacks),
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            resume=resume,
        ),
        weight_bounds=weight_bounds,
    )


class SparseCalibrationWeights:
    """L0-sparse, non-negative calibration weights with l0-python's interface, compiled with JAX.

    The constructor and ``fit`` take l0-python's ``SparseCalibrationWeights`` arguments (see the
    module docstring for what differs). ``fit(M, y, ...)`` with ``key`` equal to this object's key
    gives bitwise the weights of ``l0jax.calibrate(M, y, key=key, ...)``.

    Example:
      >>> import numpy as np, scipy.sparse as sp
      >>> from l0jax import SparseCalibrationWeights      # was: from l0.calibration import ...
      >>> M = sp.random(50, 400, density=0.3, format="csr", random_state=np.random.default_rng(0))
      >>> y = M @ np.random.default_rng(1).uniform(0, 2, 400)
      >>> model = SparseCalibrationWeights(n_features=M.shape[1], init_keep_prob=0.5, seed=0)
      >>> model = model.fit(M, y, lambda_l0=1e-4, lr=0.1, epochs=500, loss_type="relative")
      >>> 0 <= model.get_sparsity() < 1, model.predict(M).shape
      (True, (50,))

    Args:
      n_features: number of households (columns of M), >= 1.
      beta: gate temperature, > 0.
      gamma: stretch interval lower end, < 0.
      zeta: stretch interval upper end, > 1.
      init_keep_prob: starting keep probability, scalar or shape (n_features,), in [0, 1].
      init_weights: starting weights, None (1), scalar or shape (n_features,), >= 0.
      log_weight_jitter_sd: sd of the jitter added to the log weights at the first ``fit``.
      log_alpha_jitter_sd: sd of the jitter added to the gate logits here, at construction.
      device: accepted for compatibility and ignored: JAX places arrays on its default device.
      use_gates: False fits plain positive weights (no gates, no L0 term).
      seed: integer seed of every draw; None means 0 (there is no global RNG).
      key: a JAX PRNG key instead of ``seed``.
      eval_rule: deterministic gate rule, ``"median"`` (l0-python >= 0.6) or ``"paper"``.
      backend: matrix backend, ``"auto"``, ``"dense"``, ``"sparse"``, ``"ell"`` or ``"scipy"``.
      devices: None (one device), or the devices to split the households over (an int, a sequence
        of ``jax.Device`` or a 1-D mesh; see ``l0jax.calibrate``).
    """

    def __init__(
        self,
        n_features: int,
        beta: float = 2 / 3,
        gamma: float = hc.GAMMA,
        zeta: float = hc.ZETA,
        init_keep_prob: Any = 0.5,
        init_weights: Any = None,
        log_weight_jitter_sd: float = 0.0,
        log_alpha_jitter_sd: float = 0.01,
        device: Any = None,
        use_gates: bool = True,
        seed: int | None = None,
        *,
        key: Any = None,
        eval_rule: str = "median",
        backend: str = "auto",
        devices: Any = None,
    ):
        self.n_features = checks.check_int_at_least("n_features", n_features, 1)
        checks.check_positive("beta", beta, hint="It is the gate temperature, e.g. 2/3.")
        checks.check_stretch(gamma, zeta)
        checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
        checks.check_choice("backend", backend, BACKENDS)
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)
        self.log_weight_jitter_sd = float(log_weight_jitter_sd)
        self.log_alpha_jitter_sd = float(log_alpha_jitter_sd)
        self.init_weights, self.init_keep_prob = init_weights, init_keep_prob
        self.device, self.use_gates, self.seed = device, bool(use_gates), seed
        self.eval_rule, self.backend = eval_rule, backend
        self.devices = devices
        sharding.resolve_devices(devices, self.n_features)  # a bad value fails here, not at fit
        if key is not None and seed is not None:
            raise ValueError("give either seed or key, not both.")
        self.key = _as_key(0 if seed is None else seed, "seed") if key is None else _as_key(key)
        # Same draws as calibrate(): the gate jitter now, the weight jitter at the first fit.
        self._init_params = model.init_params(
            self.key,
            self.n_features,
            init_weights=init_weights,
            init_keep_prob=init_keep_prob,
            log_weight_jitter_sd=0.0,
            log_alpha_jitter_sd=log_alpha_jitter_sd,
            use_gates=self.use_gates,
        )
        self._state: model.CalibrationState | None = None
        self._optimizer: optax.GradientTransformation | None = None
        self._temperature: Any = None
        self._draws = 0
        self._weight_bounds: tuple[float, float] | None = None
        self._bounds: model.WeightBounds | None = None
        self.result_: CalibrationResult | None = None

    # -- parameters ------------------------------------------------------------------------

    @property
    def log_weight(self) -> np.ndarray:
        """Current log weights, shape (n_features,)."""
        params = self._state.params if self._state is not None else self._init_params
        return np.asarray(params["log_weight"])

    @property
    def log_alpha(self) -> np.ndarray | None:
        """Current gate logits, shape (n_features,); None without gates."""
        params = self._state.params if self._state is not None else self._init_params
        return np.asarray(params["log_alpha"]) if "log_alpha" in params else None

    @property
    def state(self) -> model.CalibrationState | None:
        """The training state (None before the first ``fit``)."""
        return self._state

    @property
    def history_(self) -> dict[str, np.ndarray] | None:
        """Per-chunk metrics of the last ``fit`` (see ``CalibrationResult.history``)."""
        return None if self.result_ is None else self.result_.history

    def _params_and_temperature(self):
        if self._state is not None:
            return self._state.params, engine.current_temperature(self._state.opt_state), self._state.hparams
        hp = model.make_hyperparams(0.0, 0.0, self.gamma, self.zeta)
        return self._init_params, jnp.float32(self.beta), hp

    # -- fitting ----------------------------------------------------------------------------

    def fit(
        self,
        M: Any,
        y: Any,
        lambda_l0: float | None = None,
        lambda_l2: float = 0.0,
        lr: float = 0.01,
        epochs: int = 1000,
        loss_type: str = "mse",
        verbose: bool = False,
        verbose_freq: int = 100,
        target_groups: Any = None,
        normalize_groups: bool = True,
        group_multipliers: Mapping[Any, float] | None = None,
        *,
        polish: bool = True,
        polish_epochs: int | None = None,
        optimizer: optax.GradientTransformation | None = None,
        temperature: Any = None,
        target_active: int | float | None = None,
        target_active_rate: float = 0.05,
        distance: str | None = None,
        distance_strength: float = 1e-3,
        aggregates: Sequence[tuple[Any, Any, float]] | None = None,
        tol: float | None = None,
        callbacks: Sequence[Callable[[Any], Any]] = (),
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        weight_bounds: tuple[float, float] | None = None,
    ) -> Self:
        """Fits the weights (l0-python's arguments); a second call continues the same run.

        Args:
          M: matrix, shape (m, n_features): scipy sparse, NumPy or JAX.
          y: targets, shape (m,).
          lambda_l0: L0 strength, >= 0; None means 0.01 (l0-python's default), or 0 with
            ``target_active``.
          lambda_l2: L2 strength, >= 0.
          lr: learning rate, > 0.
          epochs: epochs, >= 1.
          loss_type: ``"mse"``, ``"relative"`` or ``"relative_abs"``.
          verbose: show a progress bar (loss, mean/max relative error, active count).
          verbose_freq: epochs per compiled chunk (progress update and history row).
          target_groups: group id per target, shape (m,).
          normalize_groups: each group counts once in the loss.
          group_multipliers: {group id: factor}; needs ``target_groups``.
          polish: refit the active weights with frozen deterministic gates afterwards.
          polish_epochs: epochs of the polish (default from ``epochs``).
          optimizer: optax transformation (default Adam); a continued fit must keep the same one.
          temperature: None (``beta``), a constant or a schedule of the step count.
          target_active: keep K households (int) or a fraction (float in (0, 1)), by dual ascent on
            the budget's multiplier (see ``l0jax.calibrate``).
          target_active_rate: dual-ascent step of the budget's multiplier.
          distance: ``"chi2"`` or ``"raking"`` distance to ``init_weights`` (see ``l0jax.calibrate``).
          distance_strength: its multiplier.
          aggregates: list of ``(A, aggregate_targets, lambda)`` aggregate penalties.
          tol: early stopping when every relative error is <= tol.
          callbacks: functions called with a ``ChunkInfo`` at every chunk end.
          checkpoint_path: checkpoint file; ``checkpoint_every``: its period in epochs.
          checkpoint_every: epochs between checkpoints.
          resume: continue from ``checkpoint_path`` (only on a model's first ``fit``).
          weight_bounds: ``(L, U)``: each active weight within ``[L, U]`` times ``init_weights``
            (see ``l0jax.calibrate``); a second ``fit`` continuing the run must keep the same bounds.

        Returns:
          self.
        """
        if weight_bounds is not None:
            weight_bounds = model.check_weight_bounds(weight_bounds)
        if self._state is not None and weight_bounds != self._weight_bounds:
            raise ValueError(
                f"weight_bounds={weight_bounds!r} differs from the first fit's ({self._weight_bounds!r}); "
                f"a continued fit must keep the bounds (they define what the weights' parameters mean)."
            )
        if self._state is not None:
            optimizer = self._optimizer if optimizer is None else optimizer
            temperature = self._temperature if temperature is None else temperature
        try:
            result = _calibrate(
                M,
                y,
                key=self.key,
                state=self._state,
                init_log_alpha=self._init_params.get("log_alpha"),
                init_weights=self.init_weights,
                init_keep_prob=self.init_keep_prob,
                beta=self.beta,
                gamma=self.gamma,
                zeta=self.zeta,
                log_weight_jitter_sd=self.log_weight_jitter_sd,
                log_alpha_jitter_sd=self.log_alpha_jitter_sd,
                use_gates=self.use_gates,
                lambda_l0=lambda_l0,
                lambda_l2=lambda_l2,
                lr=lr,
                epochs=epochs,
                loss_type=loss_type,
                target_groups=target_groups,
                normalize_groups=normalize_groups,
                group_multipliers=group_multipliers,
                optimizer=optimizer,
                temperature=temperature,
                eval_rule=self.eval_rule,
                polish=polish,
                polish_epochs=polish_epochs,
                log_every=verbose_freq,
                verbose=verbose,
                backend=self.backend,
                n_features=self.n_features,
                devices=self.devices,
                options=production.ProductionOptions(
                    target_active=target_active,
                    target_active_rate=target_active_rate,
                    distance=distance,
                    distance_strength=distance_strength,
                    aggregates=aggregates,
                    tol=tol,
                    callbacks=tuple(callbacks),
                    checkpoint_path=checkpoint_path,
                    checkpoint_every=checkpoint_every,
                    resume=resume,
                ),
                weight_bounds=weight_bounds,
            )
        except engine.NonFiniteLossError as err:
            self._state = err.state  # keep the last finite state, as the error says
            self._set_bounds(weight_bounds)
            self._optimizer, self._temperature = optimizer, temperature
            self.result_ = None
            raise
        self._state = result.state
        self._set_bounds(weight_bounds)
        self._optimizer, self._temperature = optimizer, temperature
        self.result_ = result
        return self

    def _set_bounds(self, weight_bounds: tuple[float, float] | None) -> None:
        self._weight_bounds = weight_bounds
        self._bounds = (
            None
            if weight_bounds is None
            else model.make_weight_bounds(
                weight_bounds, self.init_weights, self.n_features, self._state.params["log_weight"].dtype
            )
        )

    # -- outputs ----------------------------------------------------------------------------

    def get_deterministic_gates(self) -> np.ndarray:
        """Deterministic gates of the current parameters, shape (n_features,) (ones without gates)."""
        params, temp, hp = self._params_and_temperature()
        with jax.numpy_dtype_promotion("standard"):
            gates = _deterministic_gates(params, temp, hp, self.eval_rule, bounds=self._bounds)
        return np.ones(self.n_features, np.float32) if gates is None else np.asarray(gates)

    def get_weights(self, deterministic: bool = False) -> np.ndarray:
        """Household weights, shape (n_features,).

        Args:
          deterministic: True gives the returned weights (deterministic gates; after ``fit`` the
            polished ones); False draws gates, from a fresh key derived from the seed each call.

        Returns:
          Non-negative float32 weights.
        """
        if deterministic and self.result_ is not None:
            return self.result_.weights.copy()
        params, temp, hp = self._params_and_temperature()
        with jax.numpy_dtype_promotion("standard"):
            if deterministic:
                gates = _deterministic_gates(params, temp, hp, self.eval_rule, bounds=self._bounds)
            else:
                # Training uses counters 0 .. 2**31 - 1 (the epochs); draws count on from 2**31.
                self._draws += 1
                counter = np.uint32(2**31 + self._draws % 2**31)
                gates = _sampled_gates(params, self.key, temp, hp, counter)
            return np.asarray(_gated_weights(params["log_weight"], gates, self._bounds))

    def predict(self, M: Any) -> np.ndarray:
        """``M @ get_weights(deterministic=True)`` in float64, shape (m,). Any matrix of n_features columns.

        Args:
          M: matrix of shape (m, n_features) (its own values: nothing is cached).

        Returns:
          Predictions, shape (m,).
        """
        if not isinstance(M, (MatrixOperator, jax.Array)) and not sp.issparse(M):
            M = checks.real_array("M", M)  # a list, or an array of text, objects or complex numbers
        elif sp.issparse(M) and not checks.is_real_dtype(M.dtype):
            raise ValueError(
                f"M must hold real numbers, got dtype {M.dtype}; convert it with .astype(float)."
            )
        shape = getattr(M, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.n_features:
            raise ValueError(f"M must have shape (m, {self.n_features}), got {shape}.")
        if not isinstance(M, MatrixOperator):
            data = M.data if sp.issparse(M) else np.asarray(M)
            checks.check_finite("M", data)
        return _host_predict(M, self.get_weights(deterministic=True))

    def get_active_weights(self) -> dict[str, Any]:
        """The non-zero deterministic weights: ``{"indices", "values", "count"}`` (NumPy arrays, int)."""
        w = self.get_weights(deterministic=True)
        idx = np.flatnonzero(w > 0)
        return {"indices": idx, "values": w[idx], "count": int(idx.size)}

    def get_sparsity(self) -> float:
        """Fraction of households whose deterministic gate is exactly zero."""
        return float(np.mean(self.get_deterministic_gates() == 0))

    def get_l0_penalty(self) -> float:
        """Expected number of open gates, ``sum P(z != 0)`` (0 without gates)."""
        params, temp, hp = self._params_and_temperature()
        with jax.numpy_dtype_promotion("standard"):
            return float(_expected_active(params, temp, hp))

    def __repr__(self) -> str:
        fitted = "unfitted" if self.result_ is None else self.result_.summary()
        return f"SparseCalibrationWeights(n_features={self.n_features}, {fitted})"
