"""``SparseL0Linear`` and ``SparseL0Logistic``: l0-python's object API over the compiled loop.

Differences from l0-python's ``l0.sparse.SparseL0Linear`` (each a fix, documented on the class):

* ``fit`` always starts from the seed's initialisation, so the same arguments give bitwise the same
  model (l0-python re-draws the weights but keeps ``log_alpha`` from the previous fit).
* No global RNG: ``seed=None`` means seed 0; ``key=`` takes a JAX key instead.
* ``csr_array`` and every scipy sparse format are accepted (l0-python's check is
  ``isinstance(X, sp.spmatrix)``, which sparse arrays fail), and nothing is cached by shape (l0-python
  reuses its converted matrix for any input of the same shape and nnz, so ``predict`` on new data of
  that shape silently returns predictions for the old data).
* ``y`` of shape (n, 1) is flattened instead of broadcasting to an (n, n) loss; bad input raises
  ``ValueError``; ``predict`` before ``fit`` raises instead of returning zeros.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Self, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule
from l0jax._src.operators import Backend, MatrixLike
from l0jax._src.regression import design as dm
from l0jax._src.regression import objective as obj
from l0jax._src.regression import refine as rf
from l0jax._src.regression import train
from l0jax._src.regression.design import DeviceLike
from l0jax._src.renamed import DEFAULT_TEMPERATURE, temperature_argument

Array = jax.Array


def _root_key(seed: Any, key: Any) -> Array:
    if key is not None:
        return checks.as_key(key)
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer (or None for 0), got {seed!r}.")
    return jax.random.key(int(seed))


def check_refine(refine: Any) -> bool:
    """``refine`` as a bool (``fit``'s and ``l0_path``'s argument); anything else is a ValueError."""
    if not isinstance(refine, (bool, np.bool_)):
        raise ValueError(
            f"refine must be True (refine the support after the stochastic phase) or False, got {refine!r}."
        )
    return bool(refine)


class _SparseL0Model:
    """Shared implementation of the linear and logistic models (see their docstrings)."""

    _kind: obj.ModelKind = "linear"
    _loss_name = "mse"

    def __init__(
        self,
        n_features: int,
        fit_intercept: bool = True,
        beta: float = DEFAULT_TEMPERATURE,
        gamma: float = -0.1,
        zeta: float = 1.1,
        init_keep_prob: float = 0.5,
        device: DeviceLike = None,
        seed: int | None = 0,
        *,
        key: Array | None = None,
        eval_rule: EvalRule = "median",
        backend: Backend = "auto",
        temperature: float | None = None,
    ) -> None:
        self.n_features = checks.check_int_at_least("n_features", n_features, 1)
        if not isinstance(fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False, got {fit_intercept!r}.")
        name, temperature = temperature_argument(beta, temperature)
        checks.check_positive(name, temperature, hint="It is the concrete temperature, e.g. 2/3.")
        checks.check_stretch(gamma, zeta)
        checks.check_open_unit("init_keep_prob", init_keep_prob)
        checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
        checks.check_choice("backend", backend, dm.operators.BACKENDS)
        self.backend: Backend = backend
        self.fit_intercept = bool(fit_intercept)
        self.temperature, self.gamma, self.zeta = float(temperature), float(gamma), float(zeta)
        self.init_keep_prob = float(init_keep_prob)
        self.eval_rule: EvalRule = eval_rule
        self.device = dm.resolve_device(device)
        self.seed = seed
        self._key = _root_key(seed, key)
        self._fitted = False
        self._params: obj.Params | None = None  # drawn on first use (fit draws the same values)
        self.history_: dict[str, np.ndarray] | None = None
        self.refinement_: dict[str, Any] | None = None

    # -- parameters ---------------------------------------------------------------------------

    def _set_params(self, params: obj.Params) -> None:
        if self.device is not None:
            params = jax.device_put(params, self.device)
        self._params = params

    @property
    def params(self) -> obj.Params:
        """The parameter dict: ``weight``, ``log_alpha`` and (with an intercept) ``bias``.

        Before ``fit`` (as in l0-python): zero weights and intercept, and ``log_alpha`` drawn from
        the seed (the same draw ``fit`` starts from).
        """
        if self._params is None:
            start = train.unfitted_params(
                self._key,
                self.init_keep_prob,
                n_features=self.n_features,
                bias=0.0 if self.fit_intercept else None,
            )
            self._set_params(jax.tree.map(jnp.asarray, start))
        assert self._params is not None  # set by fit, or just above
        return self._params

    @property
    def beta(self) -> float:
        """The gate temperature under l0-python's name (``temperature``)."""
        return self.temperature

    @property
    def weight(self) -> Array:
        """The ungated weights theta tilde, shape (n_features,)."""
        return self.params["weight"]

    @property
    def log_alpha(self) -> Array:
        """The gate locations, shape (n_features,)."""
        return self.params["log_alpha"]

    @property
    def bias(self) -> Array | None:
        """The intercept (a scalar array), or None when ``fit_intercept=False``."""
        return self.params.get("bias")

    def _hyper(self) -> obj.GateHyper:
        # Gates, penalties and predictions read only the stretch and temperature; the L0 strength
        # and learning rate matter to fit, which builds its own with _hyper_for.
        return self._hyper_for(self.params["weight"].dtype, 0.0, 0.01)

    def _hyper_for(self, dtype: DTypeLike, lambda_l0: ArrayLike, lr: ArrayLike) -> obj.GateHyper:
        f = lambda v: jnp.asarray(v, dtype)  # noqa: E731
        return obj.GateHyper(f(lambda_l0), f(lr), f(self.temperature), f(self.gamma), f(self.zeta))

    def _require_fitted(self, what: str) -> None:
        if not self._fitted:
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) before {what}.")

    # -- targets (overridden by the logistic model) ------------------------------------------

    def _encode_targets(self, y: ArrayLike, n_samples: int, *, name: str = "y", learn: bool) -> np.ndarray:
        return dm.as_targets(y, n_samples, name=name)

    # -- fitting -----------------------------------------------------------------------------

    def fit(
        self,
        X_sparse: MatrixLike,
        y: ArrayLike,
        lambda_reg: float | None = None,
        lr: float = 0.01,
        epochs: int = 1000,
        verbose: bool = False,
        verbose_freq: int = 100,
        *,
        lambda_l0: float | None = None,
        refine: bool = True,
    ) -> Self:
        """Fits by full-batch Adam on ``data_loss + lambda_l0 * expected L0``, then refines the support.

        The Adam phase is compiled (``lax.scan``); the refinement (``refine=True``) is deterministic.

        Starts from the seed's initialisation every time (weights N(0, 0.1^2), log_alpha =
        logit(init_keep_prob) + N(0, 0.01^2), intercept at the data's mean), so the same arguments
        give bitwise the same fit. Changing ``lambda_l0``, ``lr`` or ``epochs`` does not recompile.

        The refinement minimises ``data_loss + lambda_l0 * (number of selected features)`` exactly
        over supports reachable by single exchanges: it refits the coefficients on the support the
        gates selected (least squares, or Newton's method for the logistic model), then drops, adds
        or swaps one feature at a time while the objective strictly falls, from that support and
        from the empty one (see ``l0jax._src.regression.refine``). The gates, selected features,
        coefficients and predictions then all describe the refined support: its gates are exactly
        1, the others exactly 0. ``refinement_`` records the objective before and after.

        Args:
          X_sparse: (n_samples, n_features) scipy sparse matrix/array (any format) or dense array.
          y: (n_samples,) targets (0/1 or two class labels for the logistic model).
          lambda_reg: the L0 strength under l0-python's name (``lambda_l0`` is the library's).
          lr: Adam learning rate, > 0.
          epochs: number of full-batch steps, >= 1.
          verbose: print l0-python's progress line every ``verbose_freq`` epochs.
          verbose_freq: epochs between progress lines, >= 1.
          lambda_l0: the L0 strength, >= 0 (default 0.01); give it or ``lambda_reg``.
          refine: run the deterministic refinement after the stochastic phase (True by default;
            False keeps the relaxation's own result, as l0-python returns it).

        Returns:
          self, fitted; ``history_`` holds per-epoch ``loss``, ``data_loss``, ``l0``, ``n_active``,
          and ``refinement_`` (None without ``refine``) the ``support`` before and after, the
          ``objective`` before and after and the number of ``moves``.
        """
        if lambda_l0 is not None and lambda_reg is not None:
            raise ValueError(
                "give lambda_l0 or lambda_reg (l0-python's name), not both; they are the same argument."
            )
        lambda_name = "lambda_reg" if lambda_reg is not None else "lambda_l0"
        lambda_l0 = lambda_reg if lambda_reg is not None else (0.01 if lambda_l0 is None else lambda_l0)
        if not isinstance(verbose, (bool, np.bool_)):
            raise ValueError(f"verbose must be True or False, got {verbose!r}.")
        verbose_freq = checks.check_int_at_least("verbose_freq", verbose_freq, 1)
        refine = check_refine(refine)
        design, yj, hyper, epochs, carry, key = fit_inputs(
            self, X_sparse, y, lambda_l0, lr, epochs, lambda_name=lambda_name
        )

        on_chunk = None
        if verbose:

            def print_chunk(start: int, record: train.History) -> None:
                for i in range(len(record.loss)):
                    epoch = start + i + 1
                    if epoch <= epochs and epoch % verbose_freq == 0:
                        print(
                            f"Epoch {epoch:4d}: loss={record.loss[i]:.4f}, "
                            f"{self._loss_name}={record.data_loss[i]:.4f}, "
                            f"l0={record.l0[i]:.2f}, active={record.n_active[i]}"
                        )

            on_chunk = print_chunk

        params, history = train.run_fit(
            carry,
            design,
            yj,
            hyper,
            key,
            epochs,
            kind=self._kind,
            eval_rule=self.eval_rule,
            on_chunk=on_chunk,
        )
        self.refinement_ = None
        if refine:
            params, self.refinement_ = self._refined(params, design, yj, hyper)
        self._set_params(params)
        self.history_ = history._asdict()
        self._fitted = True
        return self

    def _refined(
        self, params: obj.Params, design: Any, yj: Array, hyper: obj.GateHyper
    ) -> tuple[obj.Params, dict[str, Any]]:
        gates = train.eval_gates(params, hyper, rule=self.eval_rule)
        coef = params["weight"] * gates
        before = np.asarray(gates) > train.ACTIVE_THRESHOLD
        loss_before, _ = train.evaluate_path(
            jax.tree.map(lambda v: v[None], params),
            design,
            yj,
            hyper,
            kind=self._kind,
            eval_rule=self.eval_rule,
        )
        out = rf.refine(
            design,
            yj,
            coef,
            gates,
            hyper.lambda_l0,
            kind=self._kind,
            fit_intercept=self.fit_intercept,
            threshold=train.ACTIVE_THRESHOLD,
        )
        support = np.asarray(out.support)
        dtype = params["weight"].dtype
        new = {
            "weight": jnp.asarray(out.coef, dtype),
            "log_alpha": jnp.asarray(
                rf.gate_locations(support, self.temperature, self.gamma, self.zeta), dtype
            ),
        }
        if "bias" in params:
            new["bias"] = jnp.asarray(out.intercept, dtype)
        # Both objectives measured the same way: the data loss of the model's own predictions.
        loss_after, _ = train.evaluate_path(
            jax.tree.map(lambda v: v[None], new), design, yj, hyper, kind=self._kind, eval_rule=self.eval_rule
        )
        lam = float(hyper.lambda_l0)
        if float(loss_after[0]) + lam * int(support.sum()) > float(loss_before[0]) + lam * int(before.sum()):
            # Only possible when the stochastic support is larger than the search's bound K
            # (``refine.max_support``) and was cut to fit: the stochastic fit is then kept.
            new, support, loss_after = params, before, loss_before
        info = {
            "support_before": np.flatnonzero(before),
            "objective_before": float(loss_before[0]) + lam * int(before.sum()),
            "support": np.flatnonzero(support),
            "objective": float(loss_after[0]) + lam * int(support.sum()),
            "moves": int(out.moves),
        }
        return new, info

    # -- prediction --------------------------------------------------------------------------

    def forward(self, X: MatrixLike, deterministic: bool = False, *, key: Array | None = None) -> Array:
        """The linear predictor ``X @ (weight * z) + bias`` (predictions, or logits for logistic).

        Args:
          X: (n_samples, n_features) sparse or dense.
          deterministic: use test-time gates (``eval_rule``) instead of sampled ones.
          key: PRNG key for the sampled gates; required when ``deterministic`` is False.

        Returns:
          Shape (n_samples,).
        """
        design = dm.as_design(X, n_features=self.n_features, device=self.device, backend=self.backend)
        params = self._cast_params(design)
        if deterministic:
            return train.predict(params, design, self._hyper(), eval_rule=self.eval_rule)
        if key is None:
            raise ValueError(
                "forward(X, deterministic=False) samples gates and needs a PRNG key: pass "
                "key=jax.random.key(...), or use deterministic=True / predict(X)."
            )
        return train.sampled_predict(params, design, self._hyper(), key)

    def _cast_params(self, design: dm.MatrixOperator) -> obj.Params:
        dtype = design.dtype
        return jax.tree.map(lambda p: p if p.dtype == dtype else p.astype(dtype), self.params)

    def _decision(self, X: MatrixLike) -> Array:
        self._require_fitted("predicting")
        return self.forward(X, deterministic=True)

    # -- gates -------------------------------------------------------------------------------

    def get_deterministic_gates(self) -> Array:
        """Test-time gates (``eval_rule``, "median" by default as in l0-python), shape (n_features,)."""
        return train.eval_gates(self.params, self._hyper(), rule=self.eval_rule)

    def get_l0_penalty(self) -> Array:
        """Expected number of open gates, ``sum_j P(z_j != 0)`` (eq. 12), a scalar."""
        return train.expected_l0(self.params, self._hyper())

    def get_sparsity(self) -> float:
        """Fraction of features not selected: deterministic gate at or below 0.01.

        The complement of ``get_selected_features()`` at its default threshold, so every feature
        is counted exactly once (a gate of exactly 0.01 was once in neither).
        """
        return 1.0 - float(np.mean(np.asarray(self.get_deterministic_gates()) > train.ACTIVE_THRESHOLD))

    def get_selected_features(self, threshold: float = 0.01) -> np.ndarray:
        """Indices of the features whose deterministic gate exceeds ``threshold`` (>= 0).

        Args:
          threshold: gate value, >= 0; l0-python's 0.01 by default.

        Returns:
          A 1-D int64 NumPy array of column indices, ascending.
        """
        checks.check_nonnegative("threshold", threshold)
        return np.flatnonzero(np.asarray(self.get_deterministic_gates()) > threshold)

    def get_coefficients(self, threshold: float = 0.01) -> np.ndarray:
        """Gated coefficients ``weight * gate`` with gates at or below ``threshold`` set to exactly 0.

        Args:
          threshold: gate value, >= 0; l0-python's 0.01 by default.

        Returns:
          Shape (n_features,), NumPy.
        """
        checks.check_nonnegative("threshold", threshold)
        gates = np.asarray(self.get_deterministic_gates())
        return np.where(gates > threshold, np.asarray(self.weight) * gates, 0.0)

    @property
    def coef_(self) -> np.ndarray:
        """Deterministic gated coefficients ``weight * gate``, shape (n_features,), NumPy."""
        return np.asarray(self.weight) * np.asarray(self.get_deterministic_gates())

    @property
    def intercept_(self) -> float:
        """The intercept (0.0 when ``fit_intercept=False``)."""
        return float(self.bias) if self.bias is not None else 0.0


class SparseL0Linear(_SparseL0Model):
    """L0-regularised linear regression with one hard-concrete gate per feature (l0-python's API).

    Minimises ``mean((y - X @ (w * z) - b)**2) + lambda_l0 * sum_j P(z_j != 0)`` over w, b and the
    gate locations log_alpha (Louizos et al. 2018) with full-batch Adam in a compiled loop.

    Example:
      >>> import numpy as np
      >>> from l0jax import SparseL0Linear
      >>> rng = np.random.default_rng(0)
      >>> X = rng.normal(size=(200, 4))
      >>> y = 30 + X @ np.array([1.0, 0.0, -2.0, 0.0]) + 0.5 * rng.normal(size=200)
      >>> model = SparseL0Linear(n_features=4, seed=0).fit(X, y, lambda_reg=0.2, epochs=3000)
      >>> model.get_selected_features().tolist()       # the two true features
      [0, 2]
      >>> model.predict(X[:3]).shape
      (3,)

    Args:
      n_features: number of columns of X, >= 1.
      fit_intercept: fit an (ungated) intercept.
      beta: temperature of the hard-concrete gates, > 0 (l0-python's name; ``temperature`` is the
        library's).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      init_keep_prob: initial probability of keeping each feature, in (0, 1).
      device: where to compute: None (JAX's default), a ``jax.Device``, or "cpu", "cuda"/"gpu",
        "tpu" (optionally ":index").
      seed: integer seed of the initialisation and gate noise; None means 0 (l0-python would use
        torch's global RNG; l0jax has none).
      key: a JAX PRNG key used instead of ``seed``.
      eval_rule: test-time gate rule, "median" (l0-python >= 0.6) or "paper" (eq. 13).
      backend: how X is multiplied: "auto" (by measurement: dense XLA or, on CPU, scipy CSR
        kernels; see ``as_operator``), "dense", "sparse" (``segment_sum``) or "scipy".
      temperature: the gate temperature under the library's name; give it or ``beta``.

    Differences from l0-python (bugs fixed): see ``l0jax._src.regression.estimators``' module
    docstring: reproducible fits, scipy sparse arrays accepted, no stale cache, input checks.
    """

    _kind: obj.ModelKind = "linear"
    _loss_name = "mse"

    def predict(self, X_sparse: MatrixLike) -> Array:
        """Predictions with the deterministic gates.

        Args:
          X_sparse: (n_samples, n_features) scipy sparse, NumPy or JAX array.

        Returns:
          Shape (n_samples,).
        """
        return self._decision(X_sparse)


class SparseL0Logistic(_SparseL0Model):
    """L0-regularised logistic regression (binary classification) with one gate per feature.

    Same constructor, ``fit`` and gate methods as ``SparseL0Linear``; the data loss is the mean
    binary cross-entropy ``mean(log(1 + exp(eta)) - y * eta)`` on the logits
    ``eta = X @ (w * z) + b``. ``y`` may hold any two class labels (``classes_`` sorts them; the
    second is the positive class). The intercept starts at the log-odds of the positive rate.

    Args:
      n_features: number of columns of X, >= 1.
      fit_intercept: fit an (ungated) intercept.
      beta: temperature of the hard-concrete gates, > 0 (l0-python's name; ``temperature`` is the
        library's).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      init_keep_prob: initial probability of keeping each feature, in (0, 1).
      device: None, a ``jax.Device`` or "cpu"/"cuda"/"gpu"/"tpu".
      seed: integer seed; None means 0.
      key: a JAX PRNG key used instead of ``seed``.
      eval_rule: test-time gate rule, "median" or "paper".
      backend: "auto", "dense", "sparse" or "scipy" (see ``SparseL0Linear``).
      temperature: the gate temperature under the library's name; give it or ``beta``.
    """

    _kind: obj.ModelKind = "logistic"
    _loss_name = "bce"
    classes_: np.ndarray | None = None

    def _encode_targets(self, y: ArrayLike, n_samples: int, *, name: str = "y", learn: bool) -> np.ndarray:
        labels = dm.as_targets(y, n_samples, name=name, numeric=False)
        if learn:
            classes = np.unique(labels)
            if classes.shape[0] != 2:
                raise ValueError(
                    f"{name} must hold exactly two classes for logistic regression, found "
                    f"{classes.shape[0]} ({classes[:5].tolist()}{'...' if classes.shape[0] > 5 else ''})."
                )
            self.classes_ = classes
        assert self.classes_ is not None  # learned above, or by the _prepare that precedes learn=False
        unknown = ~np.isin(labels, self.classes_)
        if unknown.any():
            raise ValueError(
                f"{name} holds labels not seen in fit ({np.unique(labels[unknown])[:5].tolist()}); "
                f"the classes are {self.classes_.tolist()}."
            )
        return (labels == self.classes_[1]).astype(np.float64)

    def decision_function(self, X: MatrixLike) -> Array:
        """Logits ``X @ (w * gate) + b`` of the positive class ``classes_[1]`` (deterministic gates).

        Args:
          X: (n_samples, n_features) scipy sparse, NumPy or JAX array.

        Returns:
          Shape (n_samples,).
        """
        return self._decision(X)

    def predict_proba(self, X: MatrixLike) -> Array:
        """Class probabilities with the deterministic gates.

        Args:
          X: (n_samples, n_features) scipy sparse, NumPy or JAX array.

        Returns:
          Shape (n_samples, 2), columns ordered as ``classes_``; rows sum to 1.
        """
        p = jax.nn.sigmoid(self._decision(X))
        return jnp.stack([1 - p, p], axis=1)

    def predict(self, X_sparse: MatrixLike) -> np.ndarray:
        """Predicted labels (from ``classes_``): the positive class where its probability > 0.5.

        Args:
          X_sparse: (n_samples, n_features) scipy sparse, NumPy or JAX array.

        Returns:
          Shape (n_samples,), NumPy, dtype of ``classes_``.
        """
        # classes_ is set by fit; _decision raises the named error for an unfitted model first.
        return cast(np.ndarray, self.classes_)[(np.asarray(self._decision(X_sparse)) > 0).astype(np.int64)]


ModelT = TypeVar("ModelT", bound=_SparseL0Model)


class FitInputs(NamedTuple):
    """What the training loop takes for one model's fit, built by ``fit_inputs``."""

    design: dm.MatrixOperator  # X behind the matvec seam, (n_samples, n_features)
    y: Array  # (n_samples,) targets (0/1 for the logistic model), in the design's dtype and device
    hyper: obj.GateHyper
    epochs: int
    carry: Any  # (params, opt_state) to start from, on the model's device (train.initial_carry)
    key: Array  # the model's PRNG key: initialisation and gate noise


def fit_inputs(
    model: _SparseL0Model,
    X: Any,  # a MatrixLike, or the design operator a path already built
    y: ArrayLike,
    lambda_l0: ArrayLike,
    lr: ArrayLike,
    epochs: Any,
    *,
    n_lambdas: int | None = None,
    lambda_name: str = "lambda_l0",
) -> FitInputs:
    """Checks a fit's arguments and builds the training loop's inputs from ``model``'s settings.

    ``fit`` trains one model on them; ``l0_path`` trains ``n_lambdas`` at once (the carry then has
    a leading axis of that length, and the path sets its own L0 strengths in ``hyper``).

    Args:
      model: the (linear or logistic) model whose settings apply; a logistic model learns
        ``classes_`` from ``y``.
      X: (n_samples, n_features) design, sparse or dense.
      y: (n_samples,) targets or class labels.
      lambda_l0: L0 strength, >= 0.
      lr: Adam's learning rate, > 0.
      epochs: number of epochs, >= 1.
      n_lambdas: None for one fit, or the number of fits trained together.
      lambda_name: the name under which the caller took ``lambda_l0``, for the error message.

    Returns:
      The ``FitInputs``.
    """
    checks.check_nonnegative(lambda_name, lambda_l0, hint="It is the L0 strength, e.g. 0.01.")
    checks.check_positive("lr", lr, hint="It is Adam's learning rate, e.g. 0.01.")
    epochs = checks.check_int_at_least("epochs", epochs, 1)
    design = dm.as_design(X, n_features=model.n_features, device=model.device, backend=model.backend)
    targets = model._encode_targets(y, design.shape[0], learn=True)
    yj = jnp.asarray(targets, design.dtype)
    if model.device is not None:
        yj = jax.device_put(yj, model.device)
    carry = train.initial_carry(
        model._key,
        targets,
        model.init_keep_prob,
        n_features=model.n_features,
        kind=model._kind,
        fit_intercept=model.fit_intercept,
        dtype=design.dtype,
        n_lambdas=n_lambdas,
    )
    hyper = model._hyper_for(design.dtype, lambda_l0, lr)
    return FitInputs(design, yj, hyper, epochs, jax.device_put(carry, model.device), model._key)


def held_out_data(model: _SparseL0Model, X: Any, y: Any) -> tuple[dm.MatrixOperator, Array]:
    """``(design, targets)`` of validation data for ``model`` (after ``fit_inputs``): X checked against its
    features, y encoded as in ``fit`` (a logistic model's labels mapped to the classes learned there).
    """
    design = dm.as_design(
        X, name="X_val", n_features=model.n_features, device=model.device, backend=model.backend
    )
    targets = model._encode_targets(y, design.shape[0], name="y_val", learn=False)
    return design, jnp.asarray(targets, design.dtype)


def fitted_model(
    cls: type[ModelT],
    settings: dict[str, Any],
    params: obj.Params,
    history: dict[str, np.ndarray],
    classes: np.ndarray | None = None,
) -> ModelT:
    """A model of class ``cls`` built with ``settings`` (its constructor arguments) and set to a fit's
    parameters, history and (logistic) classes: one point of a path.
    """
    model = cls(**settings)
    model._set_params(params)
    model._fitted = True
    model.history_ = history
    if isinstance(model, SparseL0Logistic):
        model.classes_ = classes
    return model
