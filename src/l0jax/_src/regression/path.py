"""Regularisation paths: a whole grid of L0 strengths fitted in one compiled, vmapped run.

Every lambda starts from the same initialisation and sees the same gate noise, so differences along
the path come from lambda alone. ``select_lambda`` picks a point of the path by a wanted number of
features or by validation loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src.aliases import EvalRule
from l0jax._src.operators import Backend, MatrixLike
from l0jax._src.regression import design as dm
from l0jax._src.regression import estimators as est
from l0jax._src.regression import refine as rf
from l0jax._src.regression import train
from l0jax._src.regression.design import DeviceLike
from l0jax._src.regression.estimators import SparseL0Linear, SparseL0Logistic
from l0jax._src.regression.objective import ModelKind
from l0jax._src.renamed import DEFAULT_TEMPERATURE, aliased

_MODELS = {"linear": SparseL0Linear, "logistic": SparseL0Logistic}


@dataclasses.dataclass(frozen=True)
class L0Path:
    """The result of ``l0_path``: one fitted model per lambda (NumPy arrays, k = number of lambdas).

    Attributes:
      lambdas: (k,) the L0 strengths, in the order given.
      coef: (k, n_features) deterministic gated coefficients ``weight * gate``.
      intercept: (k,) intercepts (zeros without ``fit_intercept``).
      gates: (k, n_features) deterministic gates.
      n_active: (k,) number of gates above 0.01.
      train_loss: (k,) training data loss with deterministic gates (MSE, or mean cross-entropy).
      val_loss: (k,) the same on the validation data, or None when none was given.
      history: per-epoch ``loss``, ``data_loss``, ``l0``, ``n_active``, each (k, epochs).
      kind: "linear" or "logistic".
    """

    lambdas: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    gates: np.ndarray
    n_active: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray | None
    history: dict[str, np.ndarray]
    kind: str
    _params: dict[str, np.ndarray] = dataclasses.field(repr=False)
    _settings: dict[str, Any] = dataclasses.field(repr=False)
    _classes: np.ndarray | None = dataclasses.field(repr=False, default=None)

    def model(self, index: int) -> SparseL0Linear | SparseL0Logistic:
        """The fitted model at ``lambdas[index]``, ready for ``predict`` on new data.

        Args:
          index: position on the path, e.g. from ``select_lambda``.

        Returns:
          A fitted ``SparseL0Linear`` or ``SparseL0Logistic``.
        """
        k = self.lambdas.shape[0]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -k <= index < k:
            raise ValueError(
                f"index must be an integer in [0, {k}) (the path has {k} lambdas), got {index!r}."
            )
        return est.fitted_model(
            _MODELS[self.kind],
            self._settings,
            {name: jnp.asarray(value[index]) for name, value in self._params.items()},
            {name: value[index] for name, value in self.history.items()},
            self._classes,
        )


def l0_path(
    X: MatrixLike,
    y: ArrayLike,
    lambdas: ArrayLike,
    *,
    kind: ModelKind = "linear",
    X_val: MatrixLike | None = None,
    y_val: ArrayLike | None = None,
    fit_intercept: bool = True,
    temperature: float = DEFAULT_TEMPERATURE,
    gamma: float = -0.1,
    zeta: float = 1.1,
    init_keep_prob: float = 0.5,
    lr: float = 0.01,
    epochs: int = 1000,
    seed: int | None = 0,
    key: jax.Array | None = None,
    eval_rule: EvalRule = "median",
    device: DeviceLike = None,
    backend: Backend = "auto",
    refine: bool = True,
    beta: float | None = None,
) -> L0Path:
    """Fits an L0-regularised linear or logistic model for every lambda in one compiled run.

    The fits are vmapped over lambda: the program compiles once per data shape and grid length, and
    a new grid of the same length, new epochs or new hyperparameters reuse it. Entry i equals
    ``SparseL0Linear(...).fit(X, y, lambda_l0=lambdas[i], ...)`` with the same seed (up to float
    rounding: batched matrix products sum in another order). With ``refine=True`` (the default)
    every lambda's support is then refined as in ``fit``, all lambdas in one compiled run that
    shares one Gram matrix.

    Example:
      >>> import numpy as np
      >>> from l0jax import l0_path, select_lambda
      >>> rng = np.random.default_rng(0)
      >>> X = rng.normal(size=(300, 5))
      >>> y = X @ np.array([2.0, 0.0, 0.0, -1.0, 0.0]) + 0.5 * rng.normal(size=300)
      >>> path = l0_path(X[:200], y[:200], np.geomspace(1e-3, 1.0, 10), X_val=X[200:], y_val=y[200:],
      ...                epochs=1000)
      >>> best = select_lambda(path)                 # lowest validation loss
      >>> path.n_active.shape, path.model(best).predict(X[200:203]).shape
      ((10,), (3,))

    Args:
      X: (n_samples, n_features) dense array or scipy sparse matrix/array.
      y: (n_samples,) targets (two class labels for ``kind="logistic"``).
      lambdas: (k,) L0 strengths, each finite and >= 0, any order.
      kind: "linear" (squared error) or "logistic" (binary cross-entropy).
      X_val: optional (n_val, n_features) validation data.
      y_val: (n_val,) validation targets; give both or neither.
      fit_intercept: fit an intercept.
      temperature: gate temperature, > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      init_keep_prob: initial keep probability, in (0, 1).
      lr: Adam learning rate, > 0.
      epochs: epochs per lambda, >= 1.
      seed: integer seed (None means 0); shared by every lambda.
      key: a JAX PRNG key used instead of ``seed``.
      eval_rule: test-time gate rule, "median" or "paper".
      device: None, a ``jax.Device`` or "cpu"/"cuda"/"gpu"/"tpu".
      backend: how X is multiplied: "auto", "dense", "sparse" or "scipy" (see ``as_operator``).
      refine: refine every lambda's support after the stochastic phase (see ``SparseL0Linear.fit``).
      beta: deprecated alias of ``temperature`` (l0-python's name); warns with a
        ``DeprecationWarning``. Give one of the two.

    Returns:
      An ``L0Path``.
    """
    temperature = aliased(
        "l0_path", "temperature", temperature, "beta", beta, given=temperature is not DEFAULT_TEMPERATURE
    )
    checks.check_choice("kind", kind, tuple(_MODELS))
    try:
        lambdas = np.asarray(lambdas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"lambdas must be a 1-D array of numbers, got {lambdas!r}.") from None
    if lambdas.ndim != 1 or lambdas.shape[0] == 0:
        raise ValueError(f"lambdas must be a non-empty 1-D array of L0 strengths, got shape {lambdas.shape}.")
    checks.check_nonnegative("lambdas", lambdas, hint="L0 strengths are >= 0.")
    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val for validation losses, or neither.")
    checks.check_choice("backend", backend, dm.operators.BACKENDS)
    refine = est.check_refine(refine)
    design = dm.as_design(X, device=dm.resolve_device(device), backend=backend)
    n_features = design.shape[1]
    settings = dict(
        n_features=n_features,
        fit_intercept=fit_intercept,
        temperature=temperature,
        gamma=gamma,
        zeta=zeta,
        init_keep_prob=init_keep_prob,
        device=device,
        seed=seed,
        key=key,
        eval_rule=eval_rule,
        backend=backend,
    )
    model = _MODELS[kind](**settings)
    design, yj, hyper, epochs, carry, root_key = est.fit_inputs(
        model, design, y, 0.0, lr, epochs, n_lambdas=lambdas.shape[0]
    )
    hyper = hyper._replace(lambda_l0=jnp.asarray(lambdas, hyper.lr.dtype))
    if model.device is not None:
        hyper = jax.device_put(hyper, model.device)

    if X_val is not None:  # checked before the (long) training
        design_val, yv = est.held_out_data(model, X_val, y_val)

    batched, history = train.run_path(
        carry, design, yj, hyper, root_key, epochs, kind=kind, eval_rule=eval_rule
    )
    if refine:
        gates = train.evaluate_path(batched, design, yj, hyper, kind=kind, eval_rule=eval_rule)[1]
        out = rf.refine(
            design,
            yj,
            batched["weight"] * gates,
            gates,
            hyper.lambda_l0,
            kind=kind,
            fit_intercept=model.fit_intercept,
            threshold=train.ACTIVE_THRESHOLD,
            path=True,
        )
        dtype = batched["weight"].dtype
        log_alpha = rf.gate_locations(np.asarray(out.support), model.temperature, model.gamma, model.zeta)
        refined = {"weight": jnp.asarray(out.coef, dtype), "log_alpha": jnp.asarray(log_alpha, dtype)}
        if "bias" in batched:
            refined["bias"] = jnp.asarray(out.intercept, dtype)
        # Keep the stochastic fit wherever the refined one is worse (only possible when its support
        # exceeded the search's bound ``refine.max_support`` and was cut to fit).
        lam = np.asarray(lambdas)
        before = np.asarray(
            train.evaluate_path(batched, design, yj, hyper, kind=kind, eval_rule=eval_rule)[0]
        )
        before = before + lam * np.sum(np.asarray(gates) > train.ACTIVE_THRESHOLD, axis=1)
        after = np.asarray(train.evaluate_path(refined, design, yj, hyper, kind=kind, eval_rule=eval_rule)[0])
        after = after + lam * np.sum(np.asarray(out.support), axis=1)
        worse = jnp.asarray(after > before)
        batched = {
            name: jnp.where(worse.reshape((-1,) + (1,) * (value.ndim - 1)), batched[name], value)
            for name, value in refined.items()
        }
    train_loss, gates = train.evaluate_path(batched, design, yj, hyper, kind=kind, eval_rule=eval_rule)
    val_loss = None
    if X_val is not None:
        val_loss = np.asarray(
            train.evaluate_path(batched, design_val, yv, hyper, kind=kind, eval_rule=eval_rule)[0]
        )

    params_np = {name: np.asarray(value) for name, value in batched.items()}
    gates = np.asarray(gates)
    k = lambdas.shape[0]
    return L0Path(
        lambdas=np.asarray(lambdas, np.float64),
        coef=params_np["weight"] * gates,
        intercept=params_np["bias"] if fit_intercept else np.zeros(k, params_np["weight"].dtype),
        gates=gates,
        n_active=np.sum(gates > train.ACTIVE_THRESHOLD, axis=1),
        train_loss=np.asarray(train_loss),
        val_loss=val_loss,
        history=history._asdict(),
        kind=kind,
        _params=params_np,
        _settings=settings,
        _classes=getattr(model, "classes_", None),
    )


def select_lambda(path: L0Path, n_features: int | None = None) -> int:
    """Picks a point of a regularisation path.

    * ``n_features=None``: the lowest validation loss (needs ``X_val``/``y_val`` in ``l0_path``).
    * ``n_features=m``: among the lambdas with at most m active features, the lowest validation
      loss, or without validation data the lowest training loss (in practice the largest model
      within the budget).

    Ties go to the larger lambda (the sparser model).

    Args:
      path: the result of ``l0_path``.
      n_features: the most active features wanted, >= 0, or None.

    Returns:
      The index into ``path.lambdas`` (use ``path.model(i)``, ``path.coef[i]``, ...).

    Raises:
      ValueError: no validation loss for ``n_features=None``, or no lambda meets the budget.
    """
    if not isinstance(path, L0Path):
        raise ValueError(f"path must be the L0Path returned by l0_path, got {type(path).__name__}.")
    if n_features is None:
        if path.val_loss is None:
            raise ValueError(
                "selecting by validation loss needs validation data: call l0_path(..., X_val=..., "
                "y_val=...), or pass n_features= to select by the number of features."
            )
        candidates = np.ones(path.lambdas.shape[0], bool)
    else:
        n_features = checks.check_int_at_least("n_features", n_features, 0)
        candidates = path.n_active <= n_features
        if not candidates.any():
            raise ValueError(
                f"no lambda on the path gives at most {n_features} active features (the fewest is "
                f"{int(path.n_active.min())} at lambda={path.lambdas[np.argmin(path.n_active)]:g}); "
                f"add larger lambdas to the grid."
            )
    score = path.val_loss if path.val_loss is not None else path.train_loss
    score = np.where(candidates, score, np.inf)
    # lexsort sorts by the last key first: lowest score, then largest lambda.
    return int(np.lexsort((-path.lambdas, score))[0])
