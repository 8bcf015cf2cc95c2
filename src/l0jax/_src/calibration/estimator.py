"""``SparseCalibrationWeights``: survey calibration with l0-python's object interface.

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
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.calibration import engine, model, production, sharding
from l0jax._src.calibration.blocks import CalibrationMatrix
from l0jax._src.calibration.distance import Distance
from l0jax._src.calibration.fit import FitSettings, host_predict, run_fit
from l0jax._src.calibration.losses import LossType
from l0jax._src.calibration.result import CalibrationResult
from l0jax._src.calibration.sharding import DevicesLike
from l0jax._src.operators import BACKENDS, Backend, MatrixOperator, is_sparse
from l0jax._src.renamed import DEFAULT_TEMPERATURE, temperature_argument
from l0jax._src.schedules import Schedule

# The object API's one-off evaluations, compiled once per shape rather than op by op.
_deterministic_gates = jax.jit(model.deterministic_gates, static_argnums=3)
_sampled_gates = jax.jit(model.sampled_gates)
_gated_weights = jax.jit(model.gated_weights)
_expected_active = jax.jit(model.expected_active)


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
      beta: the gate temperature, > 0 (l0-python's name; ``temperature`` is the library's).
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
      temperature: the gate temperature under the library's name; give it or ``beta``.
    """

    def __init__(
        self,
        n_features: int,
        beta: float = DEFAULT_TEMPERATURE,
        gamma: float = hc.GAMMA,
        zeta: float = hc.ZETA,
        init_keep_prob: ArrayLike = 0.5,
        init_weights: ArrayLike | None = None,
        log_weight_jitter_sd: float = 0.0,
        log_alpha_jitter_sd: float = 0.01,
        device: object = None,
        use_gates: bool = True,
        seed: int | None = None,
        *,
        key: jax.Array | None = None,
        eval_rule: EvalRule = "median",
        backend: Backend = "auto",
        devices: DevicesLike = None,
        temperature: float | None = None,
    ):
        self.n_features = checks.check_int_at_least("n_features", n_features, 1)
        name, temperature = temperature_argument(beta, temperature)
        checks.check_positive(name, temperature, hint="It is the gate temperature, e.g. 2/3.")
        checks.check_stretch(gamma, zeta)
        checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
        checks.check_choice("backend", backend, BACKENDS)
        self.temperature, self.gamma, self.zeta = float(temperature), float(gamma), float(zeta)
        self.log_weight_jitter_sd = float(log_weight_jitter_sd)
        self.log_alpha_jitter_sd = float(log_alpha_jitter_sd)
        self.init_weights, self.init_keep_prob = init_weights, init_keep_prob
        self.device, self.use_gates, self.seed = device, bool(use_gates), seed
        self.eval_rule, self.backend = eval_rule, backend
        self.devices = devices
        sharding.resolve_devices(devices, self.n_features)  # a bad value fails here, not at fit
        if key is not None and seed is not None:
            raise ValueError("give either seed or key, not both.")
        self.key = checks.as_key(0 if seed is None else seed, "seed") if key is None else checks.as_key(key)
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
    def beta(self) -> float:
        """The gate temperature under l0-python's name (``temperature``)."""
        return self.temperature

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
        return self._init_params, jnp.float32(self.temperature), hp

    def _model_settings(self) -> dict[str, Any]:
        """The constructor's settings of every fit (the rest are ``fit``'s arguments)."""
        return dict(
            init_weights=self.init_weights,
            init_keep_prob=self.init_keep_prob,
            gamma=self.gamma,
            zeta=self.zeta,
            log_weight_jitter_sd=self.log_weight_jitter_sd,
            log_alpha_jitter_sd=self.log_alpha_jitter_sd,
            use_gates=self.use_gates,
            eval_rule=self.eval_rule,
            backend=self.backend,
            devices=self.devices,
        )

    # -- fitting ----------------------------------------------------------------------------

    def fit(
        self,
        M: CalibrationMatrix,
        y: ArrayLike,
        lambda_l0: float | None = None,
        lambda_l2: float = 0.0,
        lr: float = 0.01,
        epochs: int = 1000,
        loss_type: LossType = "mse",
        verbose: bool = False,
        verbose_freq: int = 100,
        target_groups: ArrayLike | None = None,
        normalize_groups: bool = True,
        group_multipliers: Mapping[Any, float] | None = None,
        *,
        polish: bool = True,
        polish_epochs: int | None = None,
        optimizer: optax.GradientTransformation | None = None,
        temperature: Schedule | float | None = None,
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
          temperature: None (the constructor's temperature; when continuing, the previous
            ``fit``'s), a constant or a schedule of the step count.
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
            settings = FitSettings(
                lambda_l0=lambda_l0,
                lambda_l2=lambda_l2,
                lr=lr,
                epochs=epochs,
                loss_type=loss_type,
                target_groups=target_groups,
                normalize_groups=normalize_groups,
                group_multipliers=group_multipliers,
                optimizer=optimizer,
                temperature=self.temperature if temperature is None else temperature,
                polish=polish,
                polish_epochs=polish_epochs,
                log_every=verbose_freq,
                verbose=verbose,
                weight_bounds=weight_bounds,
                options=production.ProductionOptions.from_arguments(locals()),
                **self._model_settings(),
            )
            result = run_fit(
                M,
                y,
                settings,
                key=self.key,
                state=self._state,
                n_features=self.n_features,
                init_log_alpha=self._init_params.get("log_alpha"),
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
        assert self._state is not None  # called once a fit has set the state
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

    def predict(self, M: Any) -> np.ndarray:  # a MatrixLike or MatrixOperator, dispatched on at runtime
        """``M @ get_weights(deterministic=True)`` in float64, shape (m,). Any matrix of n_features columns.

        Args:
          M: matrix of shape (m, n_features) (its own values: nothing is cached).

        Returns:
          Predictions, shape (m,).
        """
        if not isinstance(M, (MatrixOperator, jax.Array)) and not is_sparse(M):
            M = checks.real_array("M", M)  # a list, or an array of text, objects or complex numbers
        elif is_sparse(M) and not checks.is_real_dtype(M.dtype):
            raise ValueError(
                f"M must hold real numbers, got dtype {M.dtype}; convert it with .astype(float)."
            )
        shape = getattr(M, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.n_features:
            raise ValueError(f"M must have shape (m, {self.n_features}), got {shape}.")
        if not isinstance(M, MatrixOperator):
            if isinstance(M, jax.Array) or not is_sparse(M):
                data = np.asarray(M)
            else:  # only these formats keep their stored values in .data (lil and dok hold lists, dicts)
                data = M.data if M.format in ("csr", "csc", "coo") else M.tocsr().data
            checks.check_finite("M", data)
        return host_predict(M, self.get_weights(deterministic=True))

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
