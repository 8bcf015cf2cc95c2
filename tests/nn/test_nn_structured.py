"""Gates on attention heads, head dimensions, MLP widths and whole blocks; their compression."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from l0jax import nn as ln

OPEN, CLOSED = 5.0, -5.0  # logits whose eval gate is exactly 1 / exactly 0 (median rule, beta 2/3)


def _n_params(module) -> int:
    return sum(int(v.size) for _, v in nnx.iter_graph(module) if isinstance(v, nnx.Param))


def _eval(module, *args, **kwargs):
    return nnx.view(module, deterministic=True, raise_if_not_found=False)(*args, **kwargs)


def test_open_attention_equals_nnx_multi_head_attention():
    ours = ln.L0MultiHeadAttention(4, 16, 32, 12, rngs=nnx.Rngs(0))
    ours.head_gate.log_alpha[...] = jnp.full((4,), OPEN)
    ref = nnx.MultiHeadAttention(4, 16, 32, 12, decode=False, rngs=nnx.Rngs(1))
    for name in ("query", "key", "value", "out"):
        getattr(ref, name).kernel[...] = getattr(ours, name)[...]
        getattr(ref, name).bias[...] = jax.random.normal(
            jax.random.key(len(name)), getattr(ref, name).bias.shape
        )
        getattr(ours, name + "_bias")[...] = getattr(ref, name).bias[...]
    x = jax.random.normal(jax.random.key(2), (3, 5, 16))
    kv = jax.random.normal(jax.random.key(3), (3, 7, 16))
    mask = jax.random.bernoulli(jax.random.key(4), 0.7, (3, 1, 5, 7))
    np.testing.assert_allclose(
        np.asarray(_eval(ours, x, kv, mask=mask)),
        np.asarray(ref(x, kv, mask=mask, deterministic=True)),
        atol=1e-5,
    )


def test_closed_head_contributes_nothing():
    attn = ln.L0MultiHeadAttention(4, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 8))
    attn.head_gate.log_alpha[...] = jnp.array([OPEN, CLOSED, OPEN, OPEN])
    y = _eval(attn, x)
    # Changing the closed head's weights changes nothing.
    attn.value[...] = attn.value[...].at[:, 1].add(3.0)
    attn.query[...] = attn.query[...].at[:, 1].add(3.0)
    np.testing.assert_array_equal(np.asarray(_eval(attn, x)), np.asarray(y))


@pytest.mark.parametrize("dim_gates", [False, True])
def test_compress_attention_keeps_eval_outputs_with_fewer_parameters(dim_gates):
    attn = ln.L0MultiHeadAttention(6, 24, dim_gates=dim_gates, rngs=nnx.Rngs(0))
    attn.head_gate.log_alpha[...] = jnp.array([OPEN, CLOSED, 0.8, CLOSED, OPEN, 0.3])  # 0.8, 0.3: fractional
    if dim_gates:
        la = jax.random.uniform(jax.random.key(5), (6, 4), minval=-4.0, maxval=4.0)
        attn.dim_gate.log_alpha[...] = la
    x = jax.random.normal(jax.random.key(1), (3, 9, 24))
    small = ln.compress(attn)
    assert isinstance(small, ln.CompressedMultiHeadAttention)
    assert small.num_heads == len(attn.open_heads()) <= 4
    assert _n_params(small) < _n_params(attn) - 2 * 24 * 4 * 2
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(_eval(attn, x)), atol=1e-5)


def test_block_gate_removes_the_whole_block():
    attn = ln.L0MultiHeadAttention(2, 8, block_gate=True, rngs=nnx.Rngs(0))
    mlp = ln.L0MLPBlock(8, 16, block_gate=True, rngs=nnx.Rngs(1))
    attn.head_gate.log_alpha[...] = jnp.full((2,), OPEN)
    attn.block_gate.log_alpha[...] = jnp.array([CLOSED])
    mlp.block_gate.log_alpha[...] = jnp.array([CLOSED])
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    assert not np.any(np.asarray(_eval(attn, x))) and not np.any(np.asarray(_eval(mlp, x)))
    small_attn, small_mlp = ln.compress(attn), ln.compress(mlp)
    assert small_attn.num_heads == 0 and small_mlp.kernel1.shape == (8, 0)
    assert not np.any(np.asarray(small_attn(x))) and not np.any(np.asarray(small_mlp(x)))
    assert attn.eval_size() == 0 and mlp.eval_size() == 0
    # The expected size counts the block gate: P(block) x the heads' size.
    p_block = float(attn.block_gate.prob_nonzero()[0])
    np.testing.assert_allclose(
        float(attn.expected_size("parameter")),
        p_block * float(np.sum(attn.head_gate.prob_nonzero())) * 4 * 8 * 4,
        rtol=1e-5,
    )


def test_compress_mlp_block_keeps_eval_outputs():
    mlp = ln.L0MLPBlock(12, 48, rngs=nnx.Rngs(0))
    la = jnp.where(jnp.arange(48) % 3 == 0, OPEN, CLOSED).at[1].set(0.9)
    mlp.hidden_gate.log_alpha[...] = la
    x = jax.random.normal(jax.random.key(1), (4, 5, 12))
    small = ln.compress(mlp)
    assert small.kernel1.shape == (12, 17) and small.kernel2.shape == (17, 12)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(_eval(mlp, x)), atol=1e-5)
    assert mlp.eval_size() == 17 * 24
    np.testing.assert_allclose(
        float(mlp.expected_size("parameter")), 24 * float(jnp.sum(mlp.hidden_gate.prob_nonzero())), rtol=1e-5
    )


class Encoder(nnx.Module):
    """A one-block transformer encoder over 6 tokens of 4 features."""

    def __init__(self, rngs):
        self.embed = nnx.Linear(4, 16, rngs=rngs)
        self.attn = ln.L0MultiHeadAttention(4, 16, init_keep_prob=0.9, rngs=rngs)
        self.mlp = ln.L0MLPBlock(16, 32, init_keep_prob=0.9, rngs=rngs)
        self.head = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x)
        h = h + self.attn(h)
        h = h + self.mlp(h)
        return self.head(h.mean(axis=1))


def test_compress_a_transformer_keeps_eval_outputs():
    model = Encoder(nnx.Rngs(0))
    model.attn.head_gate.log_alpha[...] = jnp.array([OPEN, CLOSED, CLOSED, OPEN])
    model.mlp.hidden_gate.log_alpha[...] = jnp.where(jnp.arange(32) < 12, OPEN, CLOSED)
    x = jax.random.normal(jax.random.key(1), (8, 6, 4))
    small = ln.compress(model)
    assert isinstance(small.attn, ln.CompressedMultiHeadAttention) and small.attn.num_heads == 2
    assert _n_params(small) < _n_params(model) - 2 * 4 * 16 * 4
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(_eval(model, x)), atol=1e-5)
    # The model-wide utilities see the blocks.
    stats = ln.sparsity_stats(model)
    assert stats["attn"]["open_gates"] == 2 and stats["mlp"]["open_gates"] == 12
    assert ln.active_parameter_count(model) == 2 * 4 * 16 * 4 + 12 * 32
    np.testing.assert_allclose(float(ln.l0_penalty(model)), float(ln.expected_size(model)), rtol=1e-6)


def test_head_gates_train_under_nnx_jit(optax_promotion):
    model = Encoder(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 6, 4))
    y = (x[:, :, 0].mean(axis=1) > 0).astype(jnp.int32)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            ce = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
            return ce + 1e-3 * ln.l0_penalty(model)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss, grads.attn.head_gate.log_alpha[...]

    before = np.asarray(model.attn.head_gate.log_alpha[...]).copy()
    losses = []
    for _ in range(30):
        loss, g_heads = step(model, opt, x, y)
        losses.append(float(loss))
    assert np.all(np.isfinite(np.asarray(g_heads))) and np.any(np.asarray(g_heads) != 0)
    assert np.all(np.asarray(model.attn.head_gate.log_alpha[...]) != before)  # every head gate moved
    assert losses[-1] < losses[0]


def test_flops_of_attention_follow_the_documented_count():
    attn = ln.L0MultiHeadAttention(2, 8, 12, 10, rngs=nnx.Rngs(0))  # 2 heads of 6 dims
    q, kv = jnp.zeros((1, 5, 8)), jnp.zeros((1, 7, 8))
    positions = ln.layer_positions(attn, q)
    assert positions == {"": (5, 5)}
    ph = np.asarray(attn.head_gate.prob_nonzero(), np.float64)
    L, S, i, d, o = 5, 5, 8, 6, 10
    per_head = 2 * i * d * (L + S) + L * S * (2 * d - 1) + d * (2 * S * i + L * (2 * S - 1) + 2 * L * o)
    np.testing.assert_allclose(float(ln.expected_flops(attn, q)), per_head * ph.sum(), rtol=1e-5)
    assert ln.full_size(attn, "flops", positions=positions) == 2 * per_head
    # Cross-attention: 5 queries over 7 keys.
    sizes = ln.layer_positions(attn, q, inputs_k=kv)
    assert sizes == {"": (5, 7)}


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="qkv_features \\(10\\) must be a multiple of num_heads \\(4\\)"):
        ln.L0MultiHeadAttention(4, 8, 10, rngs=nnx.Rngs(0))
    attn = ln.L0MultiHeadAttention(2, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="inputs_q must have shape"):
        attn(jnp.zeros((2, 3, 7)), deterministic=True)
    with pytest.raises(ValueError, match="x must have shape"):
        ln.L0MLPBlock(8, 4, rngs=nnx.Rngs(0))(jnp.zeros((2, 5)), deterministic=True)
