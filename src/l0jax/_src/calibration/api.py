"""``calibrate``: the functional entry point of survey calibration (the object API is in ``estimator``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax
from jax.typing import ArrayLike

from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import model, production
from l0jax._src.calibration.blocks import CalibrationMatrix
from l0jax._src.calibration.distance import Distance
from l0jax._src.calibration.fit import FitSettings, run_fit
from l0jax._src.calibration.losses import LossType
from l0jax._src.calibration.result import CalibrationResult
from l0jax._src.calibration.sharding import DevicesLike
from l0jax._src.operators import Backend
from l0jax._src.renamed import DEFAULT_TEMPERATURE, aliased
from l0jax._src.schedules import Schedule


def calibrate(
    M: CalibrationMatrix,
    targets: ArrayLike,
    *,
    key: jax.Array | int,
    lambda_l0: float | None = None,
    lambda_l2: float = 0.0,
    lr: float = 0.01,
    epochs: int = 1000,
    loss_type: LossType = "mse",
    init_weights: ArrayLike | None = None,
    init_keep_prob: ArrayLike = 0.5,
    temperature: Schedule | float | None = DEFAULT_TEMPERATURE,
    gamma: float = hc.GAMMA,
    zeta: float = hc.ZETA,
    log_weight_jitter_sd: float = 0.0,
    log_alpha_jitter_sd: float = 0.01,
    use_gates: bool = True,
    target_groups: ArrayLike | None = None,
    normalize_groups: bool = True,
    group_multipliers: Mapping[Any, float] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    eval_rule: EvalRule = "median",
    polish: bool = True,
    polish_epochs: int | None = None,
    log_every: int = 100,
    verbose: bool = False,
    backend: Backend = "auto",
    state: model.CalibrationState | None = None,
    target_active: int | float | None = None,
    target_active_rate: float = 0.05,
    distance: Distance | None = None,
    distance_strength: float = 1e-3,
    aggregates: Sequence[tuple[Any, Any, float]] | None = None,
    tol: float | None = None,
    callbacks: Sequence[Callable[[Any], Any]] = (),
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    warn_targets: bool = True,
    weight_bounds: tuple[float, float] | None = None,
    devices: DevicesLike = None,
    beta: float | None = None,
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
      temperature: the gate temperature: a constant > 0, or a schedule of the step count such as
        ``l0jax.temperature_schedule(2.0, 0.5, epochs)`` (annealed by ``anneal_temperature``).
        None means the default, 2/3.
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
      eval_rule: rule of the deterministic gates, ``"median"`` or ``"paper"``.
      polish: refit the active weights with frozen deterministic gates after training.
      polish_epochs: Adam steps of the polish; default ``default_polish_epochs(epochs)``.
      log_every: epochs per compiled chunk: one history row and one progress-bar update each.
      verbose: show a tqdm progress bar (loss, mean and max relative error, active count).
      backend: how products with M run: ``"auto"`` (chosen from the shape, density and device
        kind), ``"dense"``, ``"sparse"``, ``"ell"`` or ``"scipy"`` (CPU only).
      state: a ``CalibrationState`` (``result.state``) to continue from: its parameters, optimizer
        moments, key and step count are kept (no new jitter); the lambdas, ``lr`` and ``temperature``
        given here replace the old ones. ``init_*``, jitter and ``key`` are then not used.
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
      beta: deprecated alias of ``temperature`` (l0-python's name); warns with a
        ``DeprecationWarning``. Give one of the two.

    Returns:
      A ``CalibrationResult``.

    Raises:
      ValueError: bad input (NaN/inf in M or targets, mismatched shapes, negative lambdas,
        epochs < 1, unknown loss_type, ...), with the argument's name.
      NonFiniteLossError: (a ``FloatingPointError``) the loss became non-finite; it carries the
        epoch and the last finite state.
    """
    temperature = aliased(
        "calibrate",
        "temperature",
        DEFAULT_TEMPERATURE if temperature is None else temperature,
        "beta",
        beta,
        given=temperature is not None and temperature is not DEFAULT_TEMPERATURE,
    )
    settings = FitSettings(
        lambda_l0=lambda_l0,
        lambda_l2=lambda_l2,
        lr=lr,
        epochs=epochs,
        loss_type=loss_type,
        init_weights=init_weights,
        init_keep_prob=init_keep_prob,
        gamma=gamma,
        zeta=zeta,
        log_weight_jitter_sd=log_weight_jitter_sd,
        log_alpha_jitter_sd=log_alpha_jitter_sd,
        use_gates=use_gates,
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
        weight_bounds=weight_bounds,
        devices=devices,
        options=production.ProductionOptions.from_arguments(locals()),
    )
    return run_fit(M, targets, settings, key=key, state=state)
