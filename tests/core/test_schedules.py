"""Temperature schedules and the anneal_temperature optax transform."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l0jax


def _l0python_reference(init, final, steps, kind, epoch):
    """l0-python's TemperatureScheduler.get_temperature, written out in float64."""
    if epoch >= steps:
        return final
    progress = epoch / steps
    if kind == "linear":
        return init - (init - final) * progress
    if kind == "exponential":
        return float(np.exp(np.log(init) - (np.log(init) - np.log(final)) * progress))
    return final + (init - final) * (1 + np.cos(np.pi * progress)) / 2


@pytest.mark.parametrize("kind", ["exponential", "linear", "cosine"])
def test_schedule_values_match_l0_python(kind):
    schedule = l0jax.temperature_schedule(2.0, 0.1, 100, kind)
    for count in [0, 1, 25, 50, 99, 100, 101, 1000]:
        np.testing.assert_allclose(
            float(schedule(count)), _l0python_reference(2.0, 0.1, 100, kind, count), rtol=1e-6
        )
    assert schedule(0).dtype == jnp.float32


def test_schedule_quoted_values():
    assert round(float(l0jax.temperature_schedule(2.0, 0.1, 100, "exponential")(50)), 4) == 0.4472
    assert round(float(l0jax.temperature_schedule(2.0, 0.1, 100, "linear")(50)), 4) == 1.05
    assert round(float(l0jax.temperature_schedule(2.0, 0.1, 100, "cosine")(50)), 4) == 1.05
    for kind in ["exponential", "linear", "cosine"]:
        assert float(l0jax.temperature_schedule(2.0, 0.1, 100, kind)(100)) == np.float32(0.1)


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="init must be > 0"):
        l0jax.temperature_schedule(0.0, 0.1, 10)
    with pytest.raises(ValueError, match="final must be > 0"):
        l0jax.temperature_schedule(1.0, -0.1, 10)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        l0jax.temperature_schedule(1.0, 0.1, 0)
    with pytest.raises(ValueError, match="unknown kind 'step'.*'exponential', 'linear', 'cosine'"):
        l0jax.temperature_schedule(1.0, 0.1, 10, "step")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        l0jax.anneal_temperature(0.0)


def test_anneal_after_adam_tracks_the_schedule(optax_promotion):
    schedule = l0jax.temperature_schedule(2.0, 0.1, 10, "exponential")
    tx = optax.chain(optax.adam(0.1), l0jax.anneal_temperature(schedule))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    assert float(l0jax.current_temperature(state)) == float(schedule(0))
    update = jax.jit(tx.update)
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    adam_only = optax.adam(0.1)
    adam_state = adam_only.init(params)
    for k in range(1, 16):
        updates, state = update(grads, state, params)
        ref_updates, adam_state = adam_only.update(grads, adam_state, params)
        # The transform passes updates through untouched.
        np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(ref_updates["w"]))
        # Equal up to float32 rounding (jit may fuse exp differently from eager mode).
        np.testing.assert_allclose(float(l0jax.current_temperature(state)), float(schedule(k)), rtol=1e-6)


def test_jitted_training_loop_compiles_once_while_temperature_changes(key, optax_promotion):
    schedule = l0jax.temperature_schedule(2.0, 0.2, 100, "cosine")
    tx = optax.chain(optax.adam(0.05), l0jax.anneal_temperature(schedule))
    target = jnp.array([1.0, 0.0, 1.0, 0.0])

    def loss_fn(log_alpha, key, temperature):
        z = l0jax.hard_concrete(key, log_alpha, temperature)
        return jnp.sum((z - target) ** 2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(log_alpha, opt_state, key):
        temperature = l0jax.current_temperature(opt_state)
        grads = jax.grad(loss_fn)(log_alpha, key, temperature)
        updates, opt_state = tx.update(grads, opt_state, log_alpha)
        return optax.apply_updates(log_alpha, updates), opt_state

    log_alpha = jnp.zeros(4)
    opt_state = tx.init(log_alpha)
    temperatures = []
    for k in jax.random.split(key, 100):
        log_alpha, opt_state = train_step(log_alpha, opt_state, k)
        temperatures.append(float(l0jax.current_temperature(opt_state)))
    assert len(set(temperatures)) > 50  # it really changed
    np.testing.assert_allclose(temperatures[-1], 0.2, rtol=1e-6)
    probs = np.asarray(l0jax.prob_nonzero(log_alpha, 0.2))
    assert probs[0] > 0.9 and probs[2] > 0.9 and probs[1] < 0.1 and probs[3] < 0.1


def test_current_temperature_errors_and_nested_chains():
    with pytest.raises(ValueError, match="no anneal_temperature state"):
        l0jax.current_temperature(optax.adam(0.1).init(jnp.zeros(2)))
    twice = optax.chain(l0jax.anneal_temperature(1.0), l0jax.anneal_temperature(0.5))
    with pytest.raises(ValueError, match="ambiguous"):
        l0jax.current_temperature(twice.init(jnp.zeros(2)))
    nested = optax.chain(
        optax.chain(optax.clip(1.0), optax.sgd(0.1)), optax.chain(l0jax.anneal_temperature(0.37))
    )
    assert float(l0jax.current_temperature(nested.init(jnp.zeros(2)))) == np.float32(0.37)


def test_current_temperature_inside_nnx_optimizer():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(3))

    model = Model()
    schedule = l0jax.temperature_schedule(1.0, 0.5, 4, "linear")
    optimizer = nnx.Optimizer(
        model, optax.chain(optax.sgd(0.1), l0jax.anneal_temperature(schedule)), wrt=nnx.Param
    )

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.sum(m.w[...] ** 2))(model)
        optimizer.update(model, grads)
        return l0jax.current_temperature(optimizer)

    assert float(l0jax.current_temperature(optimizer)) == 1.0
    for k in range(1, 6):
        t = step(model, optimizer)
        np.testing.assert_allclose(float(t), float(schedule(k)))
        np.testing.assert_allclose(float(l0jax.current_temperature(optimizer.opt_state)), float(schedule(k)))


def test_schedule_quoted_values_with_x64_enabled():
    # With x64 on, a float64 constant in the formula would meet the float32 progress and strict
    # dtype promotion would raise; the values must stay float32 and unchanged.
    expected = {"exponential": 0.4472, "linear": 1.05, "cosine": 1.05}
    with jax.enable_x64(True):
        for kind, value in expected.items():
            temperature = l0jax.temperature_schedule(2.0, 0.1, 100, kind)(50)
            assert temperature.dtype == jnp.float32
            assert round(float(temperature), 4) == value
