"""Data gates: l0-python semantics with deterministic eval selections, explicit keys, and checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from nn_inputs import normal

from l0jax.nn import FeatureGate, HybridGate, L0Gate, SampleGate

LOG_ALPHA = np.array([1.5, -0.5, 0.2, -3.0, 4.0, -0.1, 0.05, -2.0], np.float32)


def _gate_with(gate, log_alpha=LOG_ALPHA):
    gate.log_alpha[...] = jnp.asarray(log_alpha)
    return gate


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_l0_gate_applies_along_any_axis(axis):
    gate = _gate_with(L0Gate(8, deterministic=True))
    shape = [3, 4, 5]
    shape[axis] = 8
    x = normal(0, tuple(shape))
    z = np.asarray(gate())
    bshape = [1, 1, 1]
    bshape[axis] = 8
    np.testing.assert_allclose(gate.apply(x, axis), np.asarray(x) * z.reshape(bshape), rtol=1e-6)
    np.testing.assert_allclose(gate.apply_gates(x, axis), gate.apply(x, axis))  # l0-python name
    with pytest.raises(ValueError, match="8 items on axis"):
        gate.apply(jnp.ones((3, 7)), 1)


def test_eval_selection_is_deterministic_and_follows_the_median_rule():
    gate = _gate_with(L0Gate(8, temperature=0.5, deterministic=True))
    idx = np.asarray(gate.active_indices())
    # Median rule with the default stretch (gamma + zeta = 1): the gate exceeds 1/2 exactly when
    # sigmoid(log_alpha / beta) > (0.5 - gamma) / (zeta - gamma) = 1/2, i.e. log_alpha > 0.
    np.testing.assert_array_equal(idx, np.flatnonzero(LOG_ALPHA > 0))
    np.testing.assert_array_equal(gate.active_indices(), idx)
    np.testing.assert_array_equal(gate.get_active_indices(), idx)


def test_eval_selection_with_an_asymmetric_stretch():
    # gamma + zeta != 1: the cut is sigmoid(log_alpha / beta) > (0.5 + 0.3) / (1.05 + 0.3), not log_alpha > 0.
    gate = _gate_with(L0Gate(8, temperature=0.5, gamma=-0.3, zeta=1.05, deterministic=True))
    cut = 0.5 * np.log((0.5 + 0.3) / (1.05 - 0.5))  # beta * logit((0.5 - gamma) / (zeta - gamma))
    np.testing.assert_array_equal(gate.active_indices(), np.flatnonzero(LOG_ALPHA > cut))
    assert 0.05 < cut < 0.2 and gate.active_indices().size < np.sum(LOG_ALPHA > 0)


def test_training_mode_selection_is_a_function_of_the_key():
    gate = _gate_with(L0Gate(8))
    a = np.asarray(gate.active_indices(rngs=jax.random.key(1)))
    b = np.asarray(gate.active_indices(rngs=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    draws = {tuple(np.asarray(gate.active_indices(rngs=jax.random.key(k)))) for k in range(2, 12)}
    assert len(draws) > 1


def test_sample_gate_trained_on_its_count_loss_lands_near_the_target(optax_promotion):
    n, target = 200, 40
    gate = SampleGate(n, target, init_jitter=1.0, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(gate, optax.adam(0.5), wrt=nnx.Param)

    @nnx.jit
    def step(gate, opt):
        loss, grads = nnx.value_and_grad(lambda g: g.count_loss(g()))(gate)
        opt.update(gate, grads)
        return loss

    for _ in range(200):
        step(gate, opt)
    data = jnp.arange(n * 2.0).reshape(n, 2)
    rows, idx = gate.select_samples(data, deterministic=True)
    assert 0.5 * target <= idx.size <= 1.5 * target
    np.testing.assert_array_equal(rows, np.asarray(data)[np.asarray(idx)])
    _, idx2 = gate.select_samples(data, deterministic=True)
    np.testing.assert_array_equal(idx, idx2)


def test_weighted_selection_keeps_zero_and_negative_weights():
    gate = _gate_with(SampleGate(8, 4, deterministic=True))
    weights = jnp.array([0.0, 1.0, -2.0, 3.0, 5.0, 1.0, 1.0, 1.0])
    _, w, idx = gate.select_weighted_samples(jnp.arange(8.0), weights)
    np.testing.assert_array_equal(idx, np.flatnonzero(LOG_ALPHA > 0))  # rows 0, 2, 4, 6
    np.testing.assert_allclose(w, np.asarray(weights)[np.asarray(idx)] * np.asarray(gate())[np.asarray(idx)])
    assert float(w[0]) == 0.0 and float(w[1]) < 0  # l0-python dropped both
    with pytest.raises(ValueError, match="weights"):
        gate.select_weighted_samples(jnp.arange(8.0), jnp.ones(7))


def test_sample_gate_degenerate_sizes():
    everything = SampleGate(5, 5, deterministic=True)  # l0-python: division by zero
    np.testing.assert_array_equal(everything.select_samples(jnp.arange(5))[1], np.arange(5))
    for target in (0, 6, -1):
        with pytest.raises(ValueError, match="target_samples must be between 1 and n_samples=5"):
            SampleGate(5, target)
    with pytest.raises(ValueError, match="n_samples"):
        SampleGate(0, 0)
    with pytest.raises(ValueError, match="rows"):
        everything.select_samples(jnp.arange(6))


def test_feature_gate_caps_at_max_features_and_names_them():
    gate = _gate_with(FeatureGate(8, 2, deterministic=True))
    data = jnp.arange(24.0).reshape(3, 8)
    sel, idx = gate.select_features(data)
    np.testing.assert_array_equal(idx, [0, 4])  # the two largest of the four open gates
    np.testing.assert_array_equal(sel, np.asarray(data)[:, [0, 4]])
    _, names = gate.select_features_with_names(data, list("abcdefgh"))
    assert names == ["a", "e"]
    np.testing.assert_allclose(gate.feature_importance(), gate.prob_nonzero())
    uncapped = _gate_with(FeatureGate(8, 20, deterministic=True))  # a cap above n_features is no cap
    np.testing.assert_array_equal(uncapped.select_features(data)[1], np.flatnonzero(LOG_ALPHA > 0))
    with pytest.raises(ValueError, match="feature_names has 3 names"):
        gate.select_features_with_names(data, ["a", "b", "c"])
    with pytest.raises(ValueError, match="max_features"):
        FeatureGate(8, 0)


def test_hybrid_select_is_reproducible_and_labels_rows():
    # The test reads NumPy's legacy global generator to show that selection leaves it alone.
    state = np.random.get_state()  # noqa: NPY002
    hybrid = HybridGate(8, l0_fraction=0.5, random_fraction=0.5, target_items=4, deterministic=True)
    hybrid.l0_gate.log_alpha[...] = jnp.asarray(LOG_ALPHA)
    data = jnp.arange(16.0).reshape(8, 2)
    rows, idx, kinds = hybrid.select(data, jax.random.key(3))
    _, idx2, kinds2 = hybrid.select(data, jax.random.key(3))
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(kinds, kinds2)
    np.testing.assert_array_equal(rows, np.asarray(data)[np.asarray(idx)])
    idx = np.asarray(idx)
    l0_rows = idx[kinds == "l0"]
    np.testing.assert_array_equal(l0_rows, np.flatnonzero(LOG_ALPHA > 0))  # rows 0, 2, 4, 6
    random_rows = idx[kinds == "random"]
    assert random_rows.size == hybrid.n_random == 2 and not set(random_rows) & set(l0_rows)
    assert np.all(np.diff(idx) > 0)
    picks = {tuple(np.asarray(hybrid.select(data, k)[1])) for k in range(10)}  # int seeds work too
    assert len(picks) > 1
    assert np.array_equal(state[1], np.random.get_state()[1])  # noqa: NPY002  (no global RNG touched)


def test_hybrid_gate_arguments():
    only_random = HybridGate(10, l0_fraction=0.0, random_fraction=1.0, target_items=3)
    _, idx, kinds = only_random.select(jnp.arange(10), 0)
    assert idx.size == 3 and set(kinds) == {"random"} and float(only_random.penalty()) == 0.0
    assert HybridGate(10).target_items == 2  # l0-python's default: 20% of the items
    with pytest.raises(ValueError, match="target_items must be between 1"):
        HybridGate(10, target_items=0)  # l0-python silently used 20%
    with pytest.raises(ValueError, match="at most 1"):
        HybridGate(10, l0_fraction=0.6, random_fraction=0.6)
    with pytest.raises(ValueError, match="l0_fraction"):
        HybridGate(10, l0_fraction=-0.1)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        only_random.select(jnp.arange(10), "seed")


def test_hybrid_shares_add_up_to_the_target():
    hybrid = HybridGate(50, target_items=10, deterministic=True)  # 10 * 0.25 and 10 * 0.75
    assert (hybrid.n_l0, hybrid.n_random) == (2, 8)  # flooring each share gave 2 + 7
    log_alpha = np.full(50, -5.0, np.float32)
    log_alpha[[3, 17]] = 5.0  # the L0 gate trained to exactly its share
    hybrid.l0_gate.log_alpha[...] = jnp.asarray(log_alpha)
    _, idx, kinds = hybrid.select(jnp.arange(50.0), jax.random.key(0))
    assert idx.size == 10 and np.unique(np.asarray(idx)).size == 10
    assert list(np.asarray(idx)[kinds == "l0"]) == [3, 17] and int(np.sum(kinds == "random")) == 8
    rounded = HybridGate(100, l0_fraction=0.29, random_fraction=0.71, target_items=100)
    assert (rounded.n_l0, rounded.n_random) == (29, 71)  # 100 * 0.29 is 28.999999999999996
    partial = HybridGate(100, l0_fraction=0.25, random_fraction=0.57, target_items=10)
    assert (partial.n_l0, partial.n_random) == (2, 5)  # shares summing below 1 are each floored


def test_hybrid_gate_passes_stretch_and_eval_rule_to_its_gate():
    hybrid = HybridGate(
        8, 0.5, 0.5, target_items=4, gamma=-0.2, zeta=1.05, eval_rule="paper", deterministic=True
    )
    gate = hybrid.l0_gate
    assert (gate.gamma, gate.zeta, gate.eval_rule) == (-0.2, 1.05, "paper")
    gate.log_alpha[...] = jnp.asarray(LOG_ALPHA)
    # Paper rule (eq. 13) with this gate's stretch and no temperature.
    expected = np.clip(1 / (1 + np.exp(-LOG_ALPHA)) * 1.25 - 0.2, 0, 1)
    np.testing.assert_allclose(gate(), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="eval_rule"):
        HybridGate(8, 0.0, 1.0, target_items=4, eval_rule="mean")
    with pytest.raises(ValueError, match="zeta"):
        HybridGate(8, 0.0, 1.0, target_items=4, zeta=0.9)
