"""L0 layers: shapes, eval outputs against a reference computation, gradients, gated biases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from nn_inputs import normal, np_init

import l0jax
from l0jax.nn import L0Conv, L0DepthwiseConv, L0Linear, SparseMLP

# One compiled program per model instead of one per eager operation (much faster to compile).
_eval_call = nnx.jit(lambda m, x: m(x, deterministic=True))


def _eval_gates(layer):
    """The median-rule eval gate in NumPy: clip(sigmoid(log_alpha / beta) (zeta - gamma) + gamma, 0, 1)."""
    g = layer.gate
    la, t = np.asarray(g.log_alpha[...], np.float64), float(g.temperature[...])
    return np.clip(1 / (1 + np.exp(-la / t)) * (g.zeta - g.gamma) + g.gamma, 0.0, 1.0)


def _spread_gates(layer, seed):
    """Gate logits spread over closed, partly open and open values (eval gates 0, fractional, 1)."""
    rng = np.random.default_rng(seed)
    layer.gate.log_alpha[...] = jnp.asarray(rng.uniform(-4, 4, layer.gate.shape), jnp.float32)


@pytest.mark.parametrize("gate, gate_shape", [("weight", (6, 4)), ("input", (6,)), ("output", (4,))])
def test_linear_shapes_and_eval_output_match_the_reference(gate, gate_shape):
    layer = L0Linear(6, 4, gate=gate, kernel_init=np_init, rngs=nnx.Rngs(0))
    _spread_gates(layer, 1)
    assert layer.gate.shape == gate_shape and layer.kernel.shape == (6, 4)
    x = normal(2, (3, 5, 6))
    y = _eval_call(layer, x)
    assert y.shape == (3, 5, 4)
    z = np.asarray(_eval_gates(layer), np.float64)
    k, b = np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)
    if gate == "weight":
        ref = np.asarray(x) @ (k * z) + b
    elif gate == "input":
        ref = (np.asarray(x) * z) @ k + b
    else:
        ref = (np.asarray(x) @ k + b) * z
    np.testing.assert_allclose(y, ref, atol=1e-6)
    assert layer.group_size() == {"weight": 1, "input": 4, "output": 6}[gate]


def _ref_conv(x, kernel, groups=1, padding="VALID"):
    n = kernel.ndim - 2
    spatial = "DHW"[-n:] if n <= 3 else None
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return lax.conv_general_dilated(
        x,
        kernel,
        (1,) * n,
        padding,
        dimension_numbers=dn,
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("spatial, structured", [((9,), True), ((7, 8), False), ((5, 6, 4), True)])
def test_conv_any_rank_eval_output_matches_the_reference(spatial, structured):
    n = len(spatial)
    conv = L0Conv(
        3,
        5,
        (3,) * n,
        padding="VALID",
        structured=structured,
        precision=lax.Precision.HIGHEST,
        kernel_init=np_init,
        rngs=nnx.Rngs(0),
    )
    _spread_gates(conv, 3)
    assert conv.gate.shape == ((5,) if structured else (3,) * n + (3, 5))
    x = normal(4, (2,) + spatial + (3,))
    y = _eval_call(conv, x)
    assert y.shape == (2,) + tuple(s - 2 for s in spatial) + (5,)
    z = _eval_gates(conv).astype(np.float32)
    kernel = conv.kernel[...] * (z.reshape((1,) * (n + 1) + (5,)) if structured else z)
    bias = np.asarray(conv.bias[...]) * (z if structured else 1.0)
    ref = _ref_conv(x, kernel) + bias.reshape((1,) * (n + 1) + (5,)).astype(np.float32)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    if n == 1:  # no batch axis (a single example) and two batch axes both work, as in nnx.Conv
        np.testing.assert_allclose(conv(x[0], deterministic=True), y[0], atol=1e-6)
        np.testing.assert_allclose(conv(x[None], deterministic=True)[0], y, atol=1e-6)


def test_depthwise_conv_gates_channels_with_their_biases():
    dw = L0DepthwiseConv(
        4,
        (3, 3),
        channel_multiplier=2,
        padding="SAME",
        precision=lax.Precision.HIGHEST,
        bias_init=nnx.initializers.ones_init(),
        kernel_init=np_init,
        rngs=nnx.Rngs(0),
    )
    dw.gate.log_alpha[...] = jnp.array([5.0, -5.0, 0.3, 5.0])  # channel 1 closed
    x = normal(5, (2, 6, 6, 4))
    y = _eval_call(dw, x)
    assert y.shape == (2, 6, 6, 8)
    z = np.repeat(_eval_gates(dw), 2).astype(np.float32)
    ref = _ref_conv(x, dw.kernel[...] * z.reshape(1, 1, 1, 8), groups=4, padding="SAME") + (
        np.asarray(dw.bias[...]) * z
    ).reshape(1, 1, 1, 8)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    np.testing.assert_array_equal(y[..., 2:4], 0.0)  # closed channel: filters *and* biases off


def test_closed_output_units_emit_no_bias():
    layer = L0Linear(
        3, 2, gate="output", bias_init=nnx.initializers.ones_init(), kernel_init=np_init, rngs=nnx.Rngs(0)
    )
    layer.gate.log_alpha[...] = jnp.array([-10.0, 10.0])
    y = layer(jnp.ones((4, 3)), deterministic=True)
    np.testing.assert_array_equal(y[:, 0], 0.0)
    conv = L0Conv(
        2,
        2,
        (3, 3),
        structured=True,
        bias_init=nnx.initializers.ones_init(),
        kernel_init=np_init,
        rngs=nnx.Rngs(0),
    )
    conv.gate.log_alpha[...] = jnp.array([-10.0, 10.0])
    np.testing.assert_array_equal(conv(jnp.ones((1, 5, 5, 2)), deterministic=True)[..., 0], 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: L0Linear(4, 3, gate="weight", kernel_init=np_init, rngs=r),
        lambda r: L0Linear(4, 3, gate="input", kernel_init=np_init, rngs=r),
        lambda r: L0Linear(4, 3, gate="output", kernel_init=np_init, rngs=r),
        lambda r: L0Conv(4, 3, (3, 3), kernel_init=np_init, rngs=r),
        lambda r: L0Conv(4, 3, (3,), structured=True, kernel_init=np_init, rngs=r),
        lambda r: L0DepthwiseConv(4, (3, 3), kernel_init=np_init, rngs=r),
    ],
)
def test_gradients_reach_weights_biases_and_log_alpha(make):
    layer = make(nnx.Rngs(0))
    layer.bias[...] = jnp.full(layer.bias.shape, 0.1)
    n_spatial = layer.kernel.ndim - 2
    x = normal(6, (2,) + (5,) * n_spatial + (4,))

    def loss(m):
        return jnp.sum(m(x, rngs=jax.random.key(7)) ** 2) + 1e-3 * m.penalty()

    grads = nnx.jit(nnx.grad(loss))(layer)
    for name in ("kernel", "bias"):
        g = np.asarray(getattr(grads, name)[...])
        assert np.all(np.isfinite(g)) and np.count_nonzero(g) > 0, name
    g = np.asarray(grads.gate.log_alpha[...])
    assert np.all(np.isfinite(g)) and np.count_nonzero(g) > g.size // 2


def test_penalty_counts_expected_nonzero_weights():
    layer = L0Linear(5, 7, gate="input", init_keep_prob=0.3, kernel_init=np_init, rngs=nnx.Rngs(0))
    p = float(l0jax.prob_nonzero(l0jax.keep_prob_to_log_alpha(0.3), 2 / 3))
    np.testing.assert_allclose(layer.penalty(), 5 * 7 * p, rtol=1e-5)
    conv = L0Conv(3, 4, (2, 2), structured=True, init_keep_prob=0.3, kernel_init=np_init, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(conv.penalty(), 4 * (2 * 2 * 3) * p, rtol=1e-5)
    dw = L0DepthwiseConv(
        3, (2, 2), channel_multiplier=2, init_keep_prob=0.3, kernel_init=np_init, rngs=nnx.Rngs(0)
    )
    np.testing.assert_allclose(dw.penalty(), 3 * (2 * 2 * 2) * p, rtol=1e-5)
    np.testing.assert_allclose(layer.expected_l2(), p * np.sum(np.asarray(layer.kernel[...]) ** 2), rtol=1e-5)


def test_sparse_mlp_flattens_and_chains_layers():
    mlp = SparseMLP(
        (64, 32, 16, 10),
        gate=("input", "input", "weight"),
        init_keep_prob=(0.8, 0.5, 0.5),
        kernel_init=np_init,
        rngs=nnx.Rngs(0),
    )
    x = normal(8, (5, 8, 8))
    y = _eval_call(mlp, x)
    assert y.shape == (5, 10)
    h = x.reshape(5, 64)
    for i, layer in enumerate(mlp.layers):
        h = _eval_call(layer, h)
        if i < 2:
            h = jax.nn.relu(h)
    np.testing.assert_allclose(y, h, atol=1e-6)
    assert [layer.granularity for layer in mlp.layers] == ["input", "input", "weight"]
    np.testing.assert_allclose(np.asarray(mlp.layers[0].gate.log_alpha[...]), np.log(4.0), rtol=1e-6)
    assert mlp.l0_chain() == list(mlp.layers)


def test_sparse_mlp_takes_zero_dimensional_arrays_as_one_value():
    for keep in (jnp.float32(0.2), np.float32(0.2), np.array(0.2), jnp.array(0.2)):
        mlp = SparseMLP(
            (4, 3, 2), gate=np.str_("input"), init_keep_prob=keep, kernel_init=np_init, rngs=nnx.Rngs(0)
        )
        assert [layer.granularity for layer in mlp.layers] == ["input", "input"]
        for layer in mlp.layers:
            np.testing.assert_allclose(np.asarray(layer.gate.log_alpha[...]), np.log(0.25), rtol=1e-6)
    ragged = SparseMLP(
        (4, 3, 2), init_keep_prob=[0.2, np.full((3, 2), 0.5)], kernel_init=np_init, rngs=nnx.Rngs(0)
    )
    np.testing.assert_allclose(np.asarray(ragged.layers[1].gate.log_alpha[...]), np.zeros((3, 2)), atol=1e-6)


def test_half_precision_inputs_compute_in_float32():
    layer = L0Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0))
    x = normal(11, (2, 3)).astype(jnp.bfloat16)
    y = layer(x, deterministic=True)
    assert y.dtype == jnp.float32
    # bfloat16 inputs are exact in float32, so computing in float32 gives the float32 result.
    y32 = layer(x.astype(jnp.float32), deterministic=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y32), rtol=1e-6)
    ybf = L0Linear(3, 2, dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))(
        x.astype(jnp.float32), deterministic=True
    )
    assert ybf.dtype == jnp.bfloat16
    # bfloat16 keeps 8 bits of mantissa: about 2 significant digits of the float32 result.
    np.testing.assert_allclose(np.asarray(ybf, np.float32), np.asarray(y32), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize(
    "build, x, match",
    [
        (lambda r: L0Linear(3, 2, kernel_init=np_init, rngs=r), jnp.ones((2, 4)), "3 features"),
        (lambda r: L0Conv(3, 2, (3, 3), kernel_init=np_init, rngs=r), jnp.ones((5, 3)), "2 spatial axes"),
    ],
)
def test_wrong_input_shapes_raise(build, x, match):
    with pytest.raises(ValueError, match=match):
        build(nnx.Rngs(0))(x, deterministic=True)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda r: L0Linear(0, 2, kernel_init=np_init, rngs=r), "in_features"),
        (lambda r: L0Linear(2, 2, gate="neuron", kernel_init=np_init, rngs=r), "gate"),
        (lambda r: L0Conv(2, 2, 3, kernel_init=np_init, rngs=r), "kernel_size"),
        (lambda r: L0Conv(2, 2, (3, 3), padding="FULL", kernel_init=np_init, rngs=r), "padding"),
        (lambda r: L0Conv(2, 2, (3, 3), strides=(1, 2, 3), kernel_init=np_init, rngs=r), "strides"),
        (
            lambda r: L0DepthwiseConv(2, (3,), channel_multiplier=0, kernel_init=np_init, rngs=r),
            "channel_multiplier",
        ),
        (lambda r: SparseMLP((4,), kernel_init=np_init, rngs=r), "features"),
        (lambda r: SparseMLP((4, 3, 2), gate=("input",), kernel_init=np_init, rngs=r), "one per layer"),
    ],
)
def test_bad_layer_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build(nnx.Rngs(0))
