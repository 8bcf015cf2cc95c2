"""HardConcreteGate: initialisation, sampling and eval against the pure core, modes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import l0jax
from l0jax.nn import HardConcreteGate, Temperature, set_temperature


def test_log_alpha_starts_at_logit_of_keep_prob():
    keep = np.array([0.1, 0.5, 0.9], np.float32)
    gate = HardConcreteGate((2, 3), init_keep_prob=keep)
    expected = np.broadcast_to(np.log(keep / (1 - keep)), (2, 3))
    np.testing.assert_allclose(gate.log_alpha[...], expected, rtol=1e-6)
    assert gate.log_alpha[...].dtype == jnp.float32
    assert isinstance(gate.log_alpha, nnx.Param)
    assert isinstance(gate.temperature, Temperature) and not isinstance(gate.temperature, nnx.Param)


def test_jitter_is_reproducible_and_has_the_requested_spread():
    a = HardConcreteGate((4000,), init_keep_prob=0.5, init_jitter=0.3, rngs=nnx.Rngs(7))
    b = HardConcreteGate((4000,), init_keep_prob=0.5, init_jitter=0.3, rngs=nnx.Rngs(7))
    la = np.asarray(a.log_alpha[...])
    np.testing.assert_array_equal(la, b.log_alpha[...])
    # logit(0.5) = 0; sample std of 4000 normals has relative s.e. ~ 1/sqrt(2 * 4000) = 1.1%.
    assert abs(la.mean()) < 4 * 0.3 / np.sqrt(4000)
    assert abs(la.std() / 0.3 - 1) < 4 / np.sqrt(2 * 4000)


def test_sampled_gates_equal_the_core_with_the_same_key(key):
    gate = HardConcreteGate((5, 2), init_keep_prob=0.7, temperature=0.4)
    z = gate(rngs=key)
    expected = l0jax.hard_concrete(key, gate.log_alpha[...], 0.4)
    np.testing.assert_allclose(z, expected, rtol=0, atol=1e-7)
    assert not np.allclose(z, gate(rngs=jax.random.key(1)))


@pytest.mark.parametrize("rule", ["median", "paper"])
def test_eval_gates_equal_hard_concrete_eval(rule):
    gate = HardConcreteGate(
        (6,), init_keep_prob=np.linspace(0.05, 0.95, 6), temperature=0.5, eval_rule=rule, deterministic=True
    )
    np.testing.assert_allclose(
        gate(), l0jax.hard_concrete_eval(gate.log_alpha[...], 0.5, rule=rule), atol=1e-7
    )


def test_penalty_prob_nonzero_and_active():
    keep = np.array([0.01, 0.2, 0.5, 0.99])
    gate = HardConcreteGate((4,), init_keep_prob=keep)
    la = np.log(keep / (1 - keep))
    p = 1 / (1 + np.exp(-(la - (2 / 3) * np.log(0.1 / 1.1))))  # eq. 12
    np.testing.assert_allclose(gate.prob_nonzero(), p, rtol=1e-5)
    np.testing.assert_allclose(gate.penalty(), p.sum(), rtol=1e-5)
    np.testing.assert_array_equal(gate.active(0.5), p > 0.5)
    np.testing.assert_array_equal(gate.active(0.0), np.ones(4, bool))
    with pytest.raises(ValueError, match="threshold"):
        gate.active(1.5)


def test_training_mode_samples_from_the_stored_stream_and_advances_it():
    gate = HardConcreteGate((8,), rngs=nnx.Rngs(3))
    z1, z2 = gate(), gate()
    assert not np.allclose(z1, z2)
    again = HardConcreteGate((8,), rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(again(), z1)


def test_missing_key_gives_an_actionable_error():
    gate = HardConcreteGate((3,))
    with pytest.raises(ValueError, match="needs a key"):
        gate()
    gate2 = HardConcreteGate((3,), deterministic=None)
    with pytest.raises(ValueError, match="nnx.view"):
        gate2()


def test_modes_follow_dropout_conventions():
    class Net(nnx.Module):
        def __init__(self):
            self.gate = HardConcreteGate((4,), init_keep_prob=0.6, rngs=nnx.Rngs(0))

    net = Net()
    assert net.gate.deterministic is False
    view = nnx.view(net, deterministic=True)
    assert view.gate.deterministic is True and net.gate.deterministic is False
    np.testing.assert_array_equal(view.gate(), view.gate())
    paper = nnx.view(net, deterministic=True, eval_rule="paper")
    np.testing.assert_allclose(
        paper.gate(), l0jax.hard_concrete_eval(net.gate.log_alpha[...], 2 / 3, rule="paper")
    )
    net.eval()
    assert net.gate.deterministic is True
    net.train()
    assert net.gate.deterministic is False


def test_optimizer_trains_log_alpha_but_not_the_temperature(optax_promotion):
    gate = HardConcreteGate((3,), rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(gate, optax.adam(0.1), wrt=nnx.Param)
    # Adam keeps mu and nu for each trained array: only log_alpha (3 entries each), plus counts.
    sizes = sorted(leaf.size for leaf in jax.tree_util.tree_leaves(nnx.state(opt.opt_state)))
    assert sizes == [1, 3, 3]
    grads = nnx.grad(lambda g: g.penalty())(gate)
    before = np.asarray(gate.log_alpha[...])
    opt.update(gate, grads)
    assert np.all(np.asarray(gate.log_alpha[...]) < before)  # the penalty pushes gates closed
    assert float(gate.temperature[...]) == pytest.approx(2 / 3)


def test_set_temperature_changes_every_gate_and_checks_its_argument():
    class Net(nnx.Module):
        def __init__(self):
            self.a = HardConcreteGate((2,))
            self.b = HardConcreteGate((3,), temperature=0.1)

    net = Net()
    set_temperature(net, 0.25)
    assert float(net.a.temperature[...]) == 0.25 and float(net.b.temperature[...]) == 0.25
    with pytest.raises(ValueError, match="temperature"):
        set_temperature(net, 0.0)
    with pytest.raises(ValueError, match="no hard-concrete gates"):
        set_temperature(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), 0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (0,)}, "shape"),
        ({"shape": (2,), "init_keep_prob": 1.0}, "init_keep_prob"),
        ({"shape": (2,), "init_keep_prob": np.ones(3) * 0.5}, "broadcast"),
        ({"shape": (2,), "temperature": -1.0}, "temperature"),
        ({"shape": (2,), "gamma": 0.1}, "gamma"),
        ({"shape": (2,), "eval_rule": "mean"}, "eval_rule"),
        ({"shape": (2,), "init_jitter": 0.1}, "rngs"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    shape = kwargs.pop("shape")
    with pytest.raises(ValueError, match=match):
        HardConcreteGate(shape, **kwargs)


def test_extreme_log_alpha_gives_finite_gates_and_gradients(key):
    gate = HardConcreteGate((2,))
    gate.log_alpha[...] = jnp.array([-1e3, 1e3])
    z = gate(rngs=key)
    np.testing.assert_array_equal(z, [0.0, 1.0])
    g = nnx.grad(lambda m: m.penalty())(gate)
    assert np.all(np.isfinite(g.log_alpha[...]))
