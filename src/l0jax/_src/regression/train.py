"""The compiled training loop of the regression models: Adam on the L0 objective, epochs in ``lax.scan``.

Epochs run in fixed-length chunks: one jitted call runs ``CHUNK`` epochs as a ``lax.scan`` and the
host loops over chunks (printing progress between them when asked). The number of epochs is an
array argument and epochs past it are skipped with ``lax.cond``, so neither the epoch count nor
lambda, the learning rate, the temperature, gamma or zeta (all arrays in ``GateHyper``) ever
recompile. The gate noise of epoch t is drawn from ``fold_in(key, t)``: the same key gives bitwise
the same fit, and a run of 150 epochs is bitwise the first 150 epochs of a longer run.

``run_path`` vmaps the same chunk over a vector of lambdas: a whole regularisation path is one
compiled program, every lambda starting from the same initial parameters and seeing the same gate
noise (common random numbers make the path smooth in lambda).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from l0jax._src.aliases import EvalRule
from l0jax._src.regression import objective as obj
from l0jax._src.regression.objective import ModelKind

Array = jax.Array
CHUNK = 100
# A feature counts as active when its deterministic gate exceeds this (l0-python's threshold).
ACTIVE_THRESHOLD = 0.01


class History(NamedTuple):
    """Per-epoch training record (arrays of length ``epochs``, or (n_lambdas, epochs) on a path)."""

    loss: Any  # the sampled objective, data_loss + lambda * l0
    data_loss: Any  # sampled-gate data loss (MSE or cross-entropy)
    l0: Any  # expected number of open gates
    n_active: Any  # deterministic gates > 0.01 after the step


def _adam(lr: Array) -> optax.GradientTransformation:
    return optax.adam(lr)


def init_opt_state(params: obj.Params) -> Any:
    """Adam's state for ``params`` (its structure does not depend on the learning rate)."""
    with jax.numpy_dtype_promotion("standard"):
        return _adam(jnp.float32(1.0)).init(params)


def _epoch(
    params, opt_state, design, y, hyper: obj.GateHyper, key, step, kind: ModelKind, eval_rule: EvalRule
):
    step_key = jax.random.fold_in(key, step)
    grad_fn = jax.value_and_grad(obj.objective, has_aux=True)
    (total, (loss, penalty)), grads = grad_fn(params, design, y, hyper, step_key, kind)
    # optax's Adam computes decay ** count with an int32 count, which strict dtype promotion
    # (a user's or the test suite's setting) rejects inside optax; its own arithmetic is safe.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = _adam(hyper.lr).update(grads, opt_state, params)
        params = cast(obj.Params, optax.apply_updates(params, updates))  # the structure of params
    n_active = jnp.sum(obj.eval_gates(params, hyper, eval_rule) > ACTIVE_THRESHOLD, dtype=jnp.int32)
    return params, opt_state, History(total, loss, penalty, n_active)


def _chunk_body(carry, design, y, hyper, key, start, epochs, kind, eval_rule, length):
    dtype = carry[0]["weight"].dtype

    def body(carry, i):
        step = start + i

        def run(c):
            params, opt_state, record = _epoch(c[0], c[1], design, y, hyper, key, step, kind, eval_rule)
            return (params, opt_state), History(
                *(jnp.asarray(r, dtype) for r in record[:3]), n_active=record[3]
            )

        def skip(c):
            zero = jnp.zeros((), dtype)
            return c, History(zero, zero, zero, jnp.zeros((), jnp.int32))

        return jax.lax.cond(step < epochs, run, skip, carry)

    return jax.lax.scan(body, carry, jnp.arange(length, dtype=jnp.int32))


def _single_chunk(carry, design, y, hyper, key, start, epochs, *, kind, eval_rule, length):
    return _chunk_body(carry, design, y, hyper, key, start, epochs, kind, eval_rule, length)


def _path_chunk(carry, design, y, hyper, key, start, epochs, *, kind, eval_rule, length):

    def one(c, lambda_l0):
        return _chunk_body(
            c, design, y, hyper._replace(lambda_l0=lambda_l0), key, start, epochs, kind, eval_rule, length
        )

    return jax.vmap(one)(carry, hyper.lambda_l0)


_STATIC = ("kind", "eval_rule", "length")
_run_single_chunk = jax.jit(_single_chunk, static_argnames=_STATIC)
_run_path_chunk = jax.jit(_path_chunk, static_argnames=_STATIC)


def initial_carry(
    root_key: Array,
    y: np.ndarray,
    init_keep_prob: float,
    *,
    n_features: int,
    kind: ModelKind,
    fit_intercept: bool,
    dtype: DTypeLike,
    n_lambdas: int | None = None,
) -> tuple[dict[str, np.ndarray], Any]:
    """``(params, opt_state)`` to start training from, built on the host (no compilation).

    The initial draws come from a NumPy generator seeded with the key's data, so the same key
    gives the same start; the training noise uses the key itself (``fold_in(key, epoch)``).

    Args:
      root_key: the model's PRNG key.
      y: targets (NumPy), for the intercept's starting value.
      init_keep_prob: initial keep probability.
      n_features: number of features.
      kind: "linear" or "logistic".
      fit_intercept: include ``bias``.
      dtype: parameter dtype.
      n_lambdas: when given, every leaf gets a leading axis of this length (a path).

    Returns:
      The carry of the training loop, NumPy arrays.
    """
    params = unfitted_params(
        root_key,
        init_keep_prob,
        n_features=n_features,
        dtype=dtype,
        zero_weights=False,
        bias=obj.initial_bias(y, kind) if fit_intercept else None,
    )
    # Adam's initial state is all zeros (moments and step count); only its structure is needed.
    shapes = jax.eval_shape(init_opt_state, params)
    opt_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    carry = (params, opt_state)
    if n_lambdas is not None:
        carry = jax.tree.map(lambda x: np.repeat(np.asarray(x)[None], n_lambdas, axis=0), carry)
    return carry


def unfitted_params(
    root_key: Array,
    init_keep_prob: float,
    *,
    n_features: int,
    dtype: DTypeLike = np.float32,
    zero_weights: bool = True,
    bias: float | None = None,
) -> dict[str, np.ndarray]:
    """The seed's initial parameters; with ``zero_weights`` the state before ``fit`` (as l0-python)."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(root_key)).ravel())
    params = obj.init_params(rng, n_features, bias, init_keep_prob, dtype)
    if zero_weights:
        params["weight"] = np.zeros_like(params["weight"])
    return params


def _run(
    runner: Callable,
    carry: Any,
    design: Any,
    y: Array,
    hyper: obj.GateHyper,
    key: Array,
    epochs: int,
    *,
    kind: ModelKind,
    eval_rule: EvalRule,
    on_chunk: Callable[[int, History], None] | None,
    chunk: int,
) -> tuple[obj.Params, History]:
    records = []
    for start in range(0, epochs, chunk):
        carry, record = runner(
            carry,
            design,
            y,
            hyper,
            key,
            np.int32(start),
            np.int32(epochs),
            kind=kind,
            eval_rule=eval_rule,
            length=chunk,
        )
        records.append(record)
        if on_chunk is not None:
            on_chunk(start, jax.tree.map(np.asarray, record))
    history = History(
        *(
            np.concatenate([np.asarray(r[f]) for r in records], axis=-1)[..., :epochs]
            for f in range(len(History._fields))
        )
    )
    return carry[0], history


def run_fit(
    carry: Any,
    design: Any,
    y: Array,
    hyper: obj.GateHyper,
    key: Array,
    epochs: int,
    *,
    kind: ModelKind,
    eval_rule: EvalRule = "median",
    on_chunk: Callable[[int, History], None] | None = None,
    chunk: int = CHUNK,
) -> tuple[obj.Params, History]:
    """Trains one model for ``epochs`` epochs of full-batch Adam.

    Args:
      carry: ``(params, opt_state)`` from ``initial_carry``.
      design: X behind the ``matvec`` seam, (n_samples, n_features).
      y: targets, (n_samples,), in the parameters' dtype.
      hyper: scalar hyperparameter arrays.
      key: PRNG key of the gate noise (epoch t uses ``fold_in(key, t)``).
      epochs: number of epochs, >= 1.
      kind: ``"linear"`` or ``"logistic"``.
      eval_rule: deterministic-gate rule used for the active counts in the history.
      on_chunk: called on the host after each chunk with (first epoch, that chunk's History).
      chunk: epochs per compiled call.

    Returns:
      The trained parameters and the per-epoch History (NumPy arrays).
    """
    return _run(
        _run_single_chunk,
        carry,
        design,
        y,
        hyper,
        key,
        epochs,
        kind=kind,
        eval_rule=eval_rule,
        on_chunk=on_chunk,
        chunk=chunk,
    )


def run_path(
    carry: Any,
    design: Any,
    y: Array,
    hyper: obj.GateHyper,
    key: Array,
    epochs: int,
    *,
    kind: ModelKind,
    eval_rule: EvalRule = "median",
    chunk: int = CHUNK,
) -> tuple[obj.Params, History]:
    """Trains one model per lambda in ``hyper.lambda_l0`` (shape (k,)) in one vmapped program.

    Args:
      carry: ``(params, opt_state)`` batched over lambdas, from ``initial_carry(..., n_lambdas=k)``.
      design: X behind the ``matvec`` seam.
      y: targets, (n_samples,).
      hyper: hyperparameters; ``lambda_l0`` has shape (k,), the rest are scalars.
      key: PRNG key of the gate noise, shared by every lambda.
      epochs: number of epochs, >= 1.
      kind: ``"linear"`` or ``"logistic"``.
      eval_rule: deterministic-gate rule used for the active counts in the history.
      chunk: epochs per compiled call.

    Returns:
      Parameters with a leading axis of length k, and the History with arrays of shape (k, epochs).
    """
    return _run(
        _run_path_chunk,
        carry,
        design,
        y,
        hyper,
        key,
        epochs,
        kind=kind,
        eval_rule=eval_rule,
        on_chunk=None,
        chunk=chunk,
    )


def _evaluate(params, design, y, hyper, *, kind, eval_rule):
    gates = obj.eval_gates(params, hyper, eval_rule)
    eta = obj.linear_predictor(params, design, gates)
    return obj.data_loss(y, eta, kind), gates


def _evaluate_path(params, design, y, hyper, *, kind, eval_rule):
    return jax.vmap(lambda p: _evaluate(p, design, y, hyper, kind=kind, eval_rule=eval_rule))(params)


evaluate_path = jax.jit(_evaluate_path, static_argnames=("kind", "eval_rule"))


def _predict(params, design, hyper, *, eval_rule):
    return obj.linear_predictor(params, design, obj.eval_gates(params, hyper, eval_rule))


predict = jax.jit(_predict, static_argnames=("eval_rule",))


def _sampled_predict(params, design, hyper, key):
    return obj.linear_predictor(params, design, obj.sample_gates(key, params, hyper))


sampled_predict = jax.jit(_sampled_predict)


# Jitted once per shape: eager JAX compiles every small op separately, which costs seconds.
eval_gates = jax.jit(obj.eval_gates, static_argnames=("rule",))
expected_l0 = jax.jit(obj.expected_l0)
