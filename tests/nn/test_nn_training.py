"""End-to-end training under nnx.jit: L0 on sklearn's digits, temperature changes without retracing."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import l0jax
from l0jax import nn as ln


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype(np.float32), y.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1400]], y[order[:1400]], x[order[1400:]], y[order[1400:]]


def _make_step(traces):
    @nnx.jit
    def step(model, optimizer, xb, yb, lam):
        traces.append(1)  # runs only while tracing
        ln.set_temperature(model, l0jax.current_temperature(optimizer))

        def loss_fn(model):
            logits = model(xb)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return ce + lam * ln.l0_penalty(model)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return step


STEPS = 400
# The temperature anneals 1.0 -> 2/3 in the optimizer state; the step feeds it to the gates. One
# transformation object for both runs: nnx.Optimizer keeps it as static data, so a new one would
# be a new function to compile.
TX = optax.chain(
    optax.adam(2e-2), l0jax.anneal_temperature(l0jax.temperature_schedule(1.0, 2 / 3, STEPS // 2))
)


def _train(step, data, lam, *, seed=0, steps=STEPS, batch=128):
    x_train, y_train, _, _ = data
    model = ln.SparseMLP((64, 64, 10), gate="input", init_keep_prob=0.9, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    rng = np.random.default_rng(seed + 1)
    l0_start = float(ln.l0_penalty(model))
    lam = jnp.asarray(lam, jnp.float32)
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch, replace=False)
        step(model, optimizer, x_train[idx], y_train[idx], lam)
    return model, l0_start


def _accuracy(model, data):
    _, _, x_test, y_test = data
    logits = nnx.jit(lambda m, x: m(x, deterministic=True))(model, x_test)
    return float(np.mean(np.asarray(logits).argmax(-1) == y_test))


# Outcomes of training, so checked for every seed 0-9 (model and batch order); 1-9 are slow. For
# seeds 0-9 the machine that wrote this saw L0 ratios 0.40-0.45, test accuracies 0.912-0.970 with
# L0 and 0.972-0.987 without, and 17-26 of 64 input gates open.
@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) if s else s for s in range(10)])
def test_l0_closes_gates_on_digits_and_lambda_zero_keeps_them_open(digits, optax_promotion, seed):
    traces = []
    step = _make_step(traces)
    model, l0_start = _train(step, digits, 2e-3, seed=seed)
    assert float(ln.l0_penalty(model)) <= 0.5 * l0_start
    assert _accuracy(model, digits) > 0.90
    stats = ln.sparsity_stats(model)
    assert stats["layers.0"]["open_gates"] < 64  # some pixels are switched off for good
    # Same step, lambda = 0: nothing pushes the gates closed (and lambda is an argument: no retrace).
    dense, l0_start0 = _train(step, digits, 0.0, seed=seed)
    assert float(ln.l0_penalty(dense)) >= 0.95 * l0_start0
    assert all(s["open_gates"] == s["gates"] for s in ln.sparsity_stats(dense).values())
    assert _accuracy(dense, digits) > 0.90
    # 800 steps, a temperature that changed on each of them, two lambdas: one trace.
    assert len(traces) == 1
    np.testing.assert_allclose(float(model.layers[0].gate.temperature[...]), 2 / 3, rtol=1e-6)


def test_temperature_changes_never_retrace(optax_promotion):
    model = ln.SparseMLP((6, 5, 2), gate="weight", rngs=nnx.Rngs(0))
    steps = 12
    tx = optax.chain(optax.sgd(0.1), l0jax.anneal_temperature(l0jax.temperature_schedule(2.0, 0.1, steps)))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    traces = []
    step = _make_step(traces)
    x, y = jnp.ones((4, 6)), jnp.zeros((4,), jnp.int32)
    schedule = l0jax.temperature_schedule(2.0, 0.1, steps)
    for k in range(steps):
        step(model, optimizer, x, y, jnp.float32(1e-2))
        # The step used the schedule's value after k updates.
        np.testing.assert_allclose(
            float(model.layers[1].gate.temperature[...]), float(schedule(k)), rtol=1e-6
        )
    assert len(traces) == 1

    # set_temperature between calls of a jitted forward pass: state, not a constant.
    calls = []

    @nnx.jit
    def forward(model, x):
        calls.append(1)
        return model(x, rngs=None)

    outs = []
    for t in (1.5, 0.7, 0.2):
        ln.set_temperature(model, t)
        outs.append(np.asarray(nnx.view(model, deterministic=True)(x)))
        forward(model, x)
    assert len(calls) == 1
    assert not np.allclose(outs[0], outs[2])  # the median eval gate depends on the temperature
