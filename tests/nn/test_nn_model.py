"""Model-wide utilities: penalties, statistics, prune and compress."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from nn_inputs import normal, np_init

import l0jax
from l0jax import nn as ln

HIGHEST = jax.lax.Precision.HIGHEST


def _set_logits(gate, rng, closed_fraction):
    """Closes a fraction of the gates (log_alpha -5: P(z != 0) ~ 0.02) and spreads the others."""
    la = rng.normal(1.0, 1.5, gate.shape)
    la[rng.random(gate.shape) < closed_fraction] = -5.0
    gate.log_alpha[...] = jnp.asarray(la, jnp.float32)


class Net(nnx.Module):
    """A LeNet-like chain: structured conv -> depthwise -> structured conv -> flatten -> dense x2."""

    def __init__(self, rngs):
        self.conv1 = ln.L0Conv(
            1, 4, (3, 3), padding="VALID", structured=True, precision=HIGHEST, kernel_init=np_init, rngs=rngs
        )
        self.dw = ln.L0DepthwiseConv(
            4, (3, 3), channel_multiplier=2, precision=HIGHEST, kernel_init=np_init, rngs=rngs
        )
        self.conv2 = ln.L0Conv(
            8, 6, (3, 3), padding="VALID", structured=True, precision=HIGHEST, kernel_init=np_init, rngs=rngs
        )
        self.fc1 = ln.L0Linear(2 * 2 * 6, 12, gate="input", precision=HIGHEST, kernel_init=np_init, rngs=rngs)
        self.fc2 = ln.L0Linear(12, 3, gate="input", precision=HIGHEST, kernel_init=np_init, rngs=rngs)
        self.free = ln.L0Gate(5)  # a data gate in the model: counted by penalties, untouched by compress

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.dw(x))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))

    def l0_chain(self):
        return [self.conv1, self.dw, self.conv2, self.fc1, self.fc2]


def _net():
    net = Net(nnx.Rngs(0))
    for _, m in nnx.iter_modules(net):
        if isinstance(m, ln.L0Layer):
            m.bias[...] = jnp.full(m.bias.shape, 0.1)
    return net


def test_l0_penalty_sums_layers_and_free_gates():
    net = _net()
    layers = [net.conv1, net.dw, net.conv2, net.fc1, net.fc2]
    expected = sum(float(m.penalty()) for m in layers) + float(net.free.penalty())
    np.testing.assert_allclose(ln.l0_penalty(net), expected, rtol=1e-6)
    expected_gates = sum(float(m.gate.penalty()) for m in layers) + float(net.free.penalty())
    np.testing.assert_allclose(ln.l0_penalty(net, per="gate"), expected_gates, rtol=1e-6)
    # At init every gate has log_alpha = logit(0.5) = 0; layers count weights, the free gate (beta 0.5) gates.
    p, p_free = float(l0jax.prob_nonzero(0.0, 2 / 3)), float(l0jax.prob_nonzero(0.0, 0.5))
    n_weights = 9 * 4 + 9 * 8 + 9 * 8 * 6 + 24 * 12 + 12 * 3
    np.testing.assert_allclose(ln.l0_penalty(net), p * n_weights + 5 * p_free, rtol=1e-5)
    with pytest.raises(ValueError, match="no L0 layers"):
        ln.l0_penalty(nnx.Linear(2, 2, kernel_init=np_init, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="per"):
        ln.l0_penalty(net, per="neuron")


def test_l2_penalty_counts_weights_never_gate_logits_or_biases():
    class Mixed(nnx.Module):
        def __init__(self, rngs):
            self.l0 = ln.L0Linear(3, 2, gate="input", init_keep_prob=0.3, kernel_init=np_init, rngs=rngs)
            self.dense = nnx.Linear(2, 2, kernel_init=np_init, rngs=rngs)
            self.gate = ln.HardConcreteGate((4,), init_keep_prob=0.9)

    m = Mixed(nnx.Rngs(0))
    m.dense.bias[...] = jnp.ones(2) * 7.0
    k0, k1 = np.asarray(m.l0.kernel[...]), np.asarray(m.dense.kernel[...])
    np.testing.assert_allclose(ln.l2_penalty(m), (k0**2).sum() + (k1**2).sum(), rtol=1e-6)
    p = np.asarray(m.l0.gate.prob_nonzero())[:, None]
    np.testing.assert_allclose(ln.l2_penalty(m, expected=True), (p * k0**2).sum() + (k1**2).sum(), rtol=1e-6)


def test_sparsity_stats_and_active_parameter_count():
    layer = ln.L0Linear(4, 5, gate="input", kernel_init=np_init, rngs=nnx.Rngs(0))
    layer.gate.log_alpha[...] = jnp.array([-5.0, 3.0, -0.5, 2.0])  # eval gate 0 iff log_alpha <= -beta log 11
    stats = ln.sparsity_stats(layer)[""]
    p = np.asarray(l0jax.prob_nonzero(jnp.array([-5.0, 3.0, -0.5, 2.0]), 2 / 3))
    assert stats["kind"] == "L0Linear" and stats["total"] == 20 and stats["gates"] == 4
    assert stats["open_gates"] == 3 and stats["active"] == 15 and stats["sparsity"] == pytest.approx(0.25)
    assert stats["expected_active"] == pytest.approx(5 * p.sum(), rel=1e-5)
    assert stats["expected_sparsity"] == pytest.approx(1 - p.sum() / 4, rel=1e-5)
    assert ln.active_parameter_count(layer) == 15
    net = _net()
    names = set(ln.sparsity_stats(net))
    assert names == {"conv1", "dw", "conv2", "fc1", "fc2", "free"}


@pytest.mark.parametrize("threshold", [0.05, 0.5])
def test_prune_zeroes_exactly_the_entries_at_or_below_the_threshold(threshold):
    net = _net()
    rng = np.random.default_rng(1)
    layers = [net.conv1, net.dw, net.conv2, net.fc1, net.fc2]
    for m in layers:
        _set_logits(m.gate, rng, 0.4)
    # A gate exactly at the threshold is pruned ("at or below").
    net.fc1.gate.log_alpha[...] = net.fc1.gate.log_alpha[...].at[0].set(1.0)
    threshold = float(net.fc1.gate.prob_nonzero()[0]) if threshold == 0.5 else threshold
    before = {id(m): (np.asarray(m.kernel[...]), np.asarray(m.bias[...])) for m in layers}
    probs = {id(m): np.asarray(m.gate.prob_nonzero()) for m in layers}
    assert ln.prune(net, threshold) is net
    for m in layers:
        k0, b0 = before[id(m)]
        keep = probs[id(m)] > threshold
        keep_k = np.broadcast_to(np.asarray(m.kernel_view(jnp.asarray(keep))), k0.shape)
        np.testing.assert_array_equal(m.kernel[...], np.where(keep_k, k0, 0.0))
        keep_b = m.bias_view(jnp.asarray(keep))
        np.testing.assert_array_equal(m.bias[...], b0 if keep_b is None else np.where(keep_b, b0, 0.0))
    assert np.any(np.asarray(net.fc1.kernel[...])[0]) == (threshold < probs[id(net.fc1)][0])
    assert (
        0
        < sum(int(np.count_nonzero(m.kernel[...])) for m in layers)
        < sum(k.size for k, _ in before.values())
    )


_call = nnx.jit(lambda m, x: m(x))  # one compiled program per model instead of one per operation


def _eval_out(model, x):
    return _call(nnx.view(model, deterministic=True), x)


@pytest.mark.parametrize("gate", ["input", "output", "weight"])
def test_compress_mlp_gives_the_shapes_of_the_open_gates_and_the_same_outputs(gate):
    mlp = ln.SparseMLP((12, 10, 8, 3), gate=gate, precision=HIGHEST, kernel_init=np_init, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(2)
    for layer in mlp.layers:
        _set_logits(layer.gate, rng, 0.3 if gate != "weight" else 0.9)
        layer.bias[...] = jnp.asarray(rng.normal(size=layer.bias.shape), jnp.float32)
    x = normal(3, (6, 12))
    before = np.asarray(mlp.layers[0].kernel[...])
    small = ln.compress(mlp)
    np.testing.assert_allclose(_call(small, x), _eval_out(mlp, x), atol=1e-5)
    np.testing.assert_array_equal(mlp.layers[0].kernel[...], before)  # the gated model is untouched
    opened = [np.asarray(layer.gate.eval_gates()) > 0 for layer in mlp.layers]
    shapes = [tuple(layer.kernel.shape) for layer in small.layers]
    if gate == "input":  # the paper's notation: open inputs per layer
        n = [int(o.sum()) for o in opened]
        assert shapes == [(n[0], n[1]), (n[1], n[2]), (n[2], 3)]
        assert small.layers[0].input_index == tuple(np.flatnonzero(opened[0]))
    elif gate == "output":  # closed outputs are removed, except from the model's output layer
        n = [int(o.sum()) for o in opened]
        assert shapes == [(12, n[0]), (n[0], n[1]), (n[1], 3)]
    else:  # per-weight gates: a unit goes when the next layer closed all its weights from it
        # (the random biases keep every unit's own output alive).
        n = [int(o.any(axis=1).sum()) for o in opened]
        assert shapes == [(n[0], n[1]), (n[1], n[2]), (n[2], 3)]
        assert n[1] < 10 and n[2] < 8  # the check is not vacuous: units were removed
    assert isinstance(small.layers[0], nnx.Linear)
    assert not any(isinstance(m, ln.HardConcreteGate) for _, m in nnx.iter_modules(small))


def test_compress_a_conv_chain_with_depthwise_and_flatten():
    net = _net()
    rng = np.random.default_rng(4)
    for m in (net.conv1, net.dw, net.conv2, net.fc1, net.fc2):
        _set_logits(m.gate, rng, 0.0)
    closed = -5.0
    net.conv1.gate.log_alpha[...] = jnp.array([2.0, closed, 1.0, 3.0])  # conv1 keeps channels 0, 2, 3
    net.dw.gate.log_alpha[...] = jnp.array([2.0, 2.0, closed, 2.0])  # dw drops channel 2 (outputs 4, 5)
    net.conv2.gate.log_alpha[...] = jnp.array([closed, 2.0, 2.0, closed, 2.0, 2.0])
    fc1 = np.full(24, 2.0)
    fc1[np.arange(24) % 6 == 5] = closed  # every feature of conv2's channel 5 unused: channel 5 goes too
    fc1[[1, 8]] = closed  # two single features of kept channels: gathered away inside fc1
    net.fc1.gate.log_alpha[...] = jnp.asarray(fc1, jnp.float32)
    fc2 = np.full(12, 2.0)
    fc2[[0, 7, 11]] = closed
    net.fc2.gate.log_alpha[...] = jnp.asarray(fc2, jnp.float32)
    x = normal(5, (2, 8, 8, 1))
    small = ln.compress(net)
    np.testing.assert_allclose(_call(small, x), _eval_out(net, x), atol=1e-5)
    # dw keeps channels 0, 1, 3 by its own gates. conv1's gates keep 0, 2, 3, but compressed conv1
    # keeps the channels dw keeps, 0, 1, 3: channel 2 goes with dw's, and the all-zero channel 1
    # stays because dw's channel 1 still emits its bias and needs an input channel to group.
    assert small.dw.feature_group_count == 3 and small.dw.kernel.shape == (3, 3, 1, 6)
    assert small.conv1.kernel.shape == (3, 3, 1, 3)  # the channels dw keeps: 0, 1, 3
    assert small.conv2.kernel.shape == (3, 3, 6, 3)  # in: dw's 6 outputs; out: channels 1, 2, 4
    kept = np.array([1, 2, 4])
    feats = np.arange(24) % 6
    used = np.isin(feats, kept) & (fc1 > 0)
    assert small.fc1.kernel.shape == (int(used.sum()), 9) and len(small.fc1.input_index) == int(used.sum())
    assert small.fc2.kernel.shape == (9, 3)
    assert small.free is not net.free and isinstance(small.free, ln.L0Gate)


def test_compress_sequential_explicit_chains_and_isolated_layers():
    rngs = nnx.Rngs(0)
    seq = nnx.Sequential(
        ln.L0Linear(6, 5, gate="output", kernel_init=np_init, rngs=rngs),
        nnx.relu,
        ln.L0Linear(5, 4, gate="input", kernel_init=np_init, rngs=rngs),
        nnx.relu,
        ln.L0Linear(4, 2, gate="input", kernel_init=np_init, rngs=rngs),
    )
    rng = np.random.default_rng(6)
    for layer in (seq.layers[0], seq.layers[2], seq.layers[4]):
        _set_logits(layer.gate, rng, 0.4)
        layer.bias[...] = jnp.asarray(rng.normal(size=layer.bias.shape), jnp.float32)
    x = normal(7, (3, 6))
    auto = ln.compress(seq)
    explicit = ln.compress(seq, chain=["layers.0", "layers.2", "layers.4"])
    np.testing.assert_allclose(_call(auto, x), _eval_out(seq, x), atol=1e-5)
    for a, b in zip(auto.layers, explicit.layers, strict=True):
        if isinstance(a, nnx.Linear):
            assert a.kernel.shape == b.kernel.shape
    # Without chains each layer only gathers its own inputs and keeps all outputs.
    alone = ln.compress(seq, chain=[])
    np.testing.assert_allclose(_call(alone, x), _eval_out(seq, x), atol=1e-5)
    assert [alone.layers[i].kernel.shape[1] for i in (0, 2, 4)] == [5, 4, 2]
    # Layer 0 keeps the units its output gates open and layer 2's input gates use.
    opened = [np.asarray(seq.layers[i].gate.eval_gates()) > 0 for i in (0, 2, 4)]
    widths = [int((opened[0] & opened[1]).sum()), int(opened[2].sum()), 2]
    assert [auto.layers[i].kernel.shape[1] for i in (0, 2, 4)] == widths
    assert widths[:2] == [1, 3]  # this seed closes units in both hidden layers


class _Scale(ln.L0Layer):
    """A user-defined L0 layer: one gated scale per feature."""

    def __init__(self, n, rngs):
        self.kernel = nnx.Param(jnp.linspace(1.0, 2.0, n, dtype=jnp.float32))
        self.bias = nnx.data(None)
        self.gate = ln.HardConcreteGate((n,), rngs=rngs)
        self.granularity = "weight"

    def kernel_view(self, z):
        return z

    def bias_view(self, z):
        return None

    def forward(self, x, kernel, bias):
        return x * kernel


def test_user_l0_layer_gets_prune_but_compress_says_it_cannot_shrink_it():
    layer = _Scale(4, nnx.Rngs(0))
    layer.gate.log_alpha[...] = jnp.array([3.0, -6.0, 3.0, -6.0], jnp.float32)
    before = np.asarray(layer.kernel[...])
    ln.prune(layer, 0.05)
    np.testing.assert_array_equal(np.asarray(layer.kernel[...]), before * np.array([1, 0, 1, 0], np.float32))
    with pytest.raises(ValueError, match="'' is a _Scale; compress knows how to shrink L0Linear"):
        ln.compress(layer)


def test_compress_after_prune_and_errors():
    mlp = ln.SparseMLP((8, 6, 2), gate="weight", kernel_init=np_init, rngs=nnx.Rngs(0))
    ln.prune(mlp, 0.5)
    x = normal(8, (2, 8))
    np.testing.assert_allclose(_call(ln.compress(mlp), x), _eval_out(mlp, x), atol=1e-5)
    with pytest.raises(ValueError, match="no L0 layers"):
        ln.compress(nnx.Linear(2, 2, kernel_init=np_init, rngs=nnx.Rngs(0)))
    net = _net()
    with pytest.raises(ValueError, match="not an L0 layer"):
        ln.compress(net, chain=["conv1", "free"])
    with pytest.raises(ValueError, match="cannot link"):
        ln.compress(net, chain=["fc1", "conv1"])
    with pytest.raises(ValueError, match="twice"):
        ln.compress(net, chain=[["conv1"], ["conv1"]])
