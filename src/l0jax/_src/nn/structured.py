"""Structured hard-concrete gates for transformers: attention heads, head dimensions, MLP widths, blocks.

CoFi (Xia, Zhong & Chen 2022) prunes a transformer through gates on coarse structures: one per
attention head, one per hidden unit of each MLP block, and one per whole block (an attention or
MLP sublayer whose output the residual stream can do without). Each gate multiplies the output of
the structure it switches, so a closed gate removes that structure's parameters and FLOPs, and
``compress`` deletes them physically.

* ``L0MultiHeadAttention``: a drop-in for ``nnx.MultiHeadAttention`` (same kernel layouts:
  query/key/value ``(in, heads, head_dim)``, out ``(heads, head_dim, out)``) with one gate per head
  on the head's output, optionally one per (head, value dimension), and optionally one for the
  whole block.
* ``L0MLPBlock``: ``dense -> activation -> gate per hidden unit -> dense``, optionally with a
  whole-block gate.

Each module reports its expected size three ways (``expected_size``): kernel entries (biases are
not counted, as for the L0 layers), open gates, and FLOPs per example. Gates of different levels
are independent, so the probability that a parameter is used is the product of the probabilities
of the gates above it (block x head x dimension). FLOPs follow the paper's counting (one multiply
and one add per weight and position, the bias add taking the place of the last add: 2 FLOPs per
kernel entry and position) for the projections, plus ``L * S * (2 d - 1)`` for a head's scores and
``L * d * (2 S - 1)`` for its weighted sum of values (L queries, S keys, d the head dimension);
the softmax, the scaling and the activation are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from l0jax._src.nn import record
from l0jax._src.nn.gate import GateConfig, GateKeywords, HardConcreteGate, RngsLike, resolve_gate_config
from l0jax._src.nn.layers import (
    check_init_arguments,
    compute_dtype,
    default_bias_init,
    default_kernel_init,
    new_param,
    optional_param,
    positive_int,
)
from l0jax._src.nn.record import SizeUnit

Array = jax.Array


def _lead(v: Array, ndim: int) -> Array:
    """``v`` with leading axes of size 1 up to ``ndim`` (broadcasting made explicit)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def _attention_heads(
    m: Any, inputs_q: Array, inputs_k: Array, inputs_v: Array, mask: Array | None, dtype: Any
) -> Array:
    """Scaled dot-product attention of every head, before the output projection: (..., length, heads, dim).

    ``m`` is a gated or a compressed attention module: both hold ``query``, ``key``, ``value`` (and
    their biases, or None), ``head_dim`` and ``precision``.
    """
    p = m.precision

    def proj(x, w, b):
        y = jnp.einsum("...li,ihd->...lhd", x.astype(dtype), w[...].astype(dtype), precision=p)
        return y if b is None else y + _lead(b[...].astype(dtype), y.ndim)

    q = proj(inputs_q, m.query, m.query_bias)
    k = proj(inputs_k, m.key, m.key_bias)
    v = proj(inputs_v, m.value, m.value_bias)
    scores = jnp.einsum("...lhd,...shd->...hls", q, k, precision=p) / jnp.sqrt(jnp.asarray(m.head_dim, dtype))
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("...hls,...shd->...lhd", weights, v, precision=p)


class L0Structured(nnx.Module):
    """Base of the modules whose gates switch whole structures (heads, hidden units, blocks).

    The model-wide utilities (``l0_penalty``, ``sparsity_stats``, ``set_temperature``,
    ``SizeBudget``, ``compress``) use this interface.
    """

    block_gate: HardConcreteGate | None
    gate_defaults: ClassVar[GateConfig] = GateConfig(init_keep_prob=0.9)

    def gates(self) -> list[HardConcreteGate]:
        """The module's gates."""
        raise NotImplementedError

    def expected_size(self, per: SizeUnit, positions: Any = None) -> Array:
        """Expected size under the gates: ``"parameter"``, ``"gate"`` or ``"flops"`` (per example)."""
        raise NotImplementedError

    def full_size(self, per: SizeUnit, positions: Any = None) -> float:
        """The size with every gate open, in the same unit."""
        raise NotImplementedError

    def eval_size(self) -> int:
        """Kernel entries in use in eval mode (deterministic gates)."""
        raise NotImplementedError

    def compressed(self) -> nnx.Module:
        """A dense module without the closed structures, with the same eval-mode outputs."""
        raise NotImplementedError

    def _block(self, deterministic, rngs) -> Array | None:
        if self.block_gate is None:
            return None
        return self.block_gate(deterministic=deterministic, rngs=rngs)

    def _p_block(self) -> Array:
        return jnp.ones((), jnp.float32) if self.block_gate is None else self.block_gate.prob_nonzero()[0]

    def _gate_count(self) -> Array:
        return sum((g.penalty() for g in self.gates()), jnp.zeros((), jnp.float32))


# ----------------------------------------------------------------------------- attention


class L0MultiHeadAttention(L0Structured):
    """Multi-head attention with a hard-concrete gate on each head (a drop-in for nnx.MultiHeadAttention).

    ``y = z_block * sum_h z_h * (softmax(q_h k_h^T / sqrt(d)) v_h) W_o[h] + b_o`` (the bias is
    switched by the block gate only), with ``z_h`` the head gates and, with ``dim_gates=True``,
    ``v_h`` multiplied by one gate per value dimension of the head as well.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import L0MultiHeadAttention
      >>> attn = L0MultiHeadAttention(4, 16, rngs=nnx.Rngs(0))
      >>> attn(jnp.ones((2, 7, 16)), deterministic=True).shape
      (2, 7, 16)

    Args:
      num_heads: number of heads H.
      in_features: width of the inputs.
      qkv_features: total width of queries, keys and values (default ``in_features``), a multiple
        of ``num_heads``.
      out_features: width of the outputs (default ``in_features``).
      dim_gates: also gate each value dimension of each head (``(H, d)`` gates).
      block_gate: one more gate switching the whole block's output.
      gate_config: the gates' hyperparameters (``GateConfig``); default
        ``GateConfig(init_keep_prob=0.9)``.
      use_bias: whether the projections add biases.
      kernel_init: initializer of the four kernels.
      bias_init: initializer of the biases.
      dtype: computation dtype (default: the wider of inputs and parameters).
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the products.
      rngs: ``nnx.Rngs`` for initialisation (``params``) and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        *,
        dim_gates: bool = False,
        block_gate: bool = False,
        gate_config: GateConfig | None = None,
        use_bias: bool = True,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        self.num_heads = positive_int("num_heads", num_heads)
        self.in_features = positive_int("in_features", in_features)
        self.qkv_features = positive_int("qkv_features", qkv_features or in_features)
        self.out_features = positive_int("out_features", out_features or in_features)
        if self.qkv_features % self.num_heads:
            raise ValueError(
                f"qkv_features ({self.qkv_features}) must be a multiple of num_heads ({self.num_heads})."
            )
        self.head_dim = self.qkv_features // self.num_heads
        check_init_arguments(type(self).__name__, rngs, kernel_init=kernel_init, bias_init=bias_init)
        config = resolve_gate_config(self, gate_config, gate_keywords)
        self.use_bias = use_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        h, d, i, o = self.num_heads, self.head_dim, self.in_features, self.out_features

        def kernel(shape, fan_shape):
            # Initialised as a (fan_in, fan_out) matrix, then laid out like nnx.LinearGeneral's.
            return nnx.Param(kernel_init(rngs.params(), fan_shape, param_dtype).reshape(shape))

        self.query = kernel((i, h, d), (i, h * d))
        self.key = kernel((i, h, d), (i, h * d))
        self.value = kernel((i, h, d), (i, h * d))
        self.out = kernel((h, d, o), (h * d, o))
        self.query_bias = optional_param(use_bias, bias_init, rngs, (h, d), param_dtype)
        self.key_bias = optional_param(use_bias, bias_init, rngs, (h, d), param_dtype)
        self.value_bias = optional_param(use_bias, bias_init, rngs, (h, d), param_dtype)
        self.out_bias = optional_param(use_bias, bias_init, rngs, (o,), param_dtype)
        self.head_gate = config.build((h,), rngs=rngs)
        self.dim_gate = config.build((h, d), rngs=rngs) if dim_gates else nnx.data(None)
        self.block_gate = config.build((1,), rngs=rngs) if block_gate else nnx.data(None)

    def gates(self) -> list[HardConcreteGate]:
        """The head gates, then the dimension and block gates when present."""
        return [g for g in (self.head_gate, self.dim_gate, self.block_gate) if g is not None]

    def _value_gates(self, deterministic, rngs) -> tuple[Array, Array | None]:
        """(head gates (H,), gates of every value dimension (H, d) or None)."""
        zh = self.head_gate(deterministic=deterministic, rngs=rngs)
        zd = None if self.dim_gate is None else self.dim_gate(deterministic=deterministic, rngs=rngs)
        return zh, zd

    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        mask: Array | None = None,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> Array:
        """Attention of ``inputs_q`` over ``inputs_k`` / ``inputs_v`` (self-attention by default).

        Args:
          inputs_q: queries, shape ``(..., L, in_features)``.
          inputs_k: keys, shape ``(..., S, in_features)`` (default ``inputs_q``).
          inputs_v: values, shape ``(..., S, in_features)`` (default ``inputs_k``).
          mask: boolean, broadcastable to ``(..., H, L, S)``; False masks a key out.
          deterministic: overrides the gates' mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's gate noise.

        Returns:
          Shape ``(..., L, out_features)``.
        """
        inputs_q = jnp.asarray(inputs_q)
        inputs_k = inputs_q if inputs_k is None else jnp.asarray(inputs_k)
        inputs_v = inputs_k if inputs_v is None else jnp.asarray(inputs_v)
        for name, x in (("inputs_q", inputs_q), ("inputs_k", inputs_k), ("inputs_v", inputs_v)):
            if x.ndim < 2 or x.shape[-1] != self.in_features:
                raise ValueError(f"{name} must have shape (..., length, {self.in_features}), got {x.shape}.")
        record.note(self, (inputs_q.shape[-2], inputs_k.shape[-2]))
        zh, zd = self._value_gates(deterministic, rngs)
        zb = self._block(deterministic, rngs)
        dtype = compute_dtype(inputs_q.dtype, self.query.dtype, self.dtype)
        p = self.precision
        heads = _attention_heads(self, inputs_q, inputs_k, inputs_v, mask, dtype)
        gate = zh.astype(dtype)[:, None]
        if zd is not None:
            gate = gate * zd.astype(dtype)
        heads = heads * _lead(gate, heads.ndim)
        y = jnp.einsum("...lhd,hdo->...lo", heads, self.out[...].astype(dtype), precision=p)
        if self.out_bias is not None:
            y = y + _lead(self.out_bias[...].astype(dtype), y.ndim)
        return y if zb is None else y * _lead(zb.astype(dtype), y.ndim)

    def _p_dims(self) -> Array:
        """P(value dimension used) of every (head, dimension): block x head (x dimension)."""
        p = self._p_block() * self.head_gate.prob_nonzero()[:, None]
        p = jnp.broadcast_to(p, (self.num_heads, self.head_dim))
        return p if self.dim_gate is None else p * self.dim_gate.prob_nonzero()

    def expected_size(self, per: SizeUnit, positions: Any = None) -> Array:
        """Expected kernel entries, open gates or FLOPs per example (needs ``positions = (L, S)``).

        Args:
          per: ``"parameter"``, ``"gate"`` or ``"flops"``.
          positions: ``(L, S)``, the query and key lengths of one example (FLOPs only).

        Returns:
          A float32 scalar, differentiable in the gate logits.
        """
        if per == "gate":
            return self._gate_count()
        i, o, d = self.in_features, self.out_features, self.head_dim
        p_head = self._p_block() * self.head_gate.prob_nonzero()  # (H,) query/key used
        p_dim = self._p_dims()  # (H, d) value column and output row used
        if per == "parameter":
            return 2 * i * d * jnp.sum(p_head) + (i + o) * jnp.sum(p_dim)
        length, keys = _lengths(positions, self)
        qk = 2.0 * i * d * (length + keys) * jnp.sum(p_head)
        scores = length * keys * (2.0 * d - 1.0) * jnp.sum(p_head)
        values = (2.0 * keys * i + length * (2.0 * keys - 1.0) + 2.0 * length * o) * jnp.sum(p_dim)
        return qk + scores + values

    def full_size(self, per: SizeUnit, positions: Any = None) -> float:
        """The size with every gate open (same units as ``expected_size``)."""
        h, d, i, o = self.num_heads, self.head_dim, self.in_features, self.out_features
        if per == "gate":
            return float(sum(int(np.prod(g.shape)) for g in self.gates()))
        if per == "parameter":
            return float(h * d * (3 * i + o))
        length, keys = _lengths(positions, self)
        return float(
            h * (2 * i * d * (length + keys) + length * keys * (2 * d - 1))
            + h * d * (2 * keys * i + length * (2 * keys - 1) + 2 * length * o)
        )

    def _eval_dims(self) -> np.ndarray:
        """Eval-mode gate of each (head, value dimension): block x head (x dimension), shape (H, d)."""
        z = np.asarray(self.head_gate.eval_gates(), np.float64)[:, None] * np.ones((1, self.head_dim))
        if self.dim_gate is not None:
            z = z * np.asarray(self.dim_gate.eval_gates(), np.float64)
        if self.block_gate is not None:
            z = z * float(np.asarray(self.block_gate.eval_gates())[0])
        return z

    def open_heads(self) -> np.ndarray:
        """Indices of the heads that are open in eval mode (some value dimension open)."""
        return np.flatnonzero((self._eval_dims() > 0).any(axis=1))

    def eval_size(self) -> int:
        """Kernel entries in use in eval mode."""
        z = self._eval_dims()
        heads = int((z > 0).any(axis=1).sum())
        return int(
            2 * self.in_features * self.head_dim * heads
            + (self.in_features + self.out_features) * (z > 0).sum()
        )

    def compressed(self) -> CompressedMultiHeadAttention:
        """The attention without its closed heads and value dimensions (gates folded into ``out``).

        Heads whose value dimensions were closed in different numbers keep as many as the widest
        of them; the others are padded with zero columns, which add exactly zero.
        """
        z = self._eval_dims()
        keep = z > 0
        heads = np.flatnonzero(keep.any(axis=1))
        dv = int(keep[heads].sum(axis=1).max()) if heads.size else 0
        get = lambda v: None if v is None else np.asarray(v[...], np.float32)  # noqa: E731
        wq, wk, wv, wo = (
            np.asarray(v[...], np.float32) for v in (self.query, self.key, self.value, self.out)
        )
        bq, bk, bv, bo = get(self.query_bias), get(self.key_bias), get(self.value_bias), get(self.out_bias)
        i, o = self.in_features, self.out_features
        v2 = np.zeros((i, heads.size, dv), np.float32)
        bv2 = np.zeros((heads.size, dv), np.float32)
        o2 = np.zeros((heads.size, dv, o), np.float32)
        for j, h in enumerate(heads):
            dims = np.flatnonzero(keep[h])
            v2[:, j, : dims.size] = wv[:, h, dims]
            if bv is not None:
                bv2[j, : dims.size] = bv[h, dims]
            o2[j, : dims.size] = wo[h, dims] * z[h, dims][:, None]
        zb = 1.0 if self.block_gate is None else float(np.asarray(self.block_gate.eval_gates())[0])
        return CompressedMultiHeadAttention(
            wq[:, heads],
            wk[:, heads],
            v2,
            o2,
            None if bq is None else bq[heads],
            None if bk is None else bk[heads],
            None if bv is None else bv2,
            None if bo is None else bo * zb,
            head_dim=self.head_dim,
            dtype=self.dtype,
            precision=self.precision,
        )


def _lengths(positions: Any, module: nnx.Module) -> tuple[float, float]:
    if positions is None:
        raise ValueError(
            f"FLOPs of a {type(module).__name__} depend on the sequence length: pass example= (one "
            f"input batch) to SizeBudget or expected_flops so that the lengths can be read."
        )
    if isinstance(positions, (int, np.integer)):
        return float(positions), float(positions)
    length, keys = positions
    return float(length), float(keys)


class CompressedMultiHeadAttention(nnx.Module):
    """Dense multi-head attention over the kept heads, made by ``L0MultiHeadAttention.compressed``.

    The query/key kernels are ``(in, H', d)``; the value and output kernels ``(in, H', d_v)`` and
    ``(H', d_v, out)``, with ``d_v <= d`` the kept value dimensions; the eval gates are folded into
    the output kernel and bias.
    """

    def __init__(self, wq, wk, wv, wo, bq, bk, bv, bo, *, head_dim: int, dtype=None, precision=None):
        p = lambda a: None if a is None else nnx.Param(jnp.asarray(a))  # noqa: E731
        self.query, self.key = nnx.Param(jnp.asarray(wq)), nnx.Param(jnp.asarray(wk))
        self.value, self.out = nnx.Param(jnp.asarray(wv)), nnx.Param(jnp.asarray(wo))
        self.query_bias, self.key_bias, self.value_bias, self.out_bias = (
            nnx.data(p(bq)),
            nnx.data(p(bk)),
            nnx.data(p(bv)),
            nnx.data(p(bo)),
        )
        self.head_dim = head_dim
        self.dtype, self.precision = dtype, precision

    @property
    def num_heads(self) -> int:
        """Number of kept heads."""
        return int(self.query.shape[1])

    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        mask: Array | None = None,
        deterministic: bool | None = None,
        rngs: RngsLike = None,
    ) -> Array:
        """As ``L0MultiHeadAttention`` in eval mode (``deterministic`` and ``rngs`` are ignored)."""
        inputs_q = jnp.asarray(inputs_q)
        inputs_k = inputs_q if inputs_k is None else jnp.asarray(inputs_k)
        inputs_v = inputs_k if inputs_v is None else jnp.asarray(inputs_v)
        dtype = compute_dtype(inputs_q.dtype, self.query.dtype, self.dtype)
        p = self.precision
        heads = _attention_heads(self, inputs_q, inputs_k, inputs_v, mask, dtype)
        y = jnp.einsum("...lhd,hdo->...lo", heads, self.out[...].astype(dtype), precision=p)
        return y if self.out_bias is None else y + _lead(self.out_bias[...].astype(dtype), y.ndim)


# ----------------------------------------------------------------------------- MLP block


class L0MLPBlock(L0Structured):
    """``dense -> activation -> gate per hidden unit -> dense``: a transformer MLP with a prunable width.

    ``y = z_block * ((act(x W1 + b1) * z) W2 + b2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import L0MLPBlock
      >>> mlp = L0MLPBlock(16, 64, rngs=nnx.Rngs(0))
      >>> mlp(jnp.ones((2, 7, 16)), deterministic=True).shape
      (2, 7, 16)

    Args:
      in_features: input width.
      hidden_features: hidden width (one gate per hidden unit).
      out_features: output width (default ``in_features``).
      activation: elementwise nonlinearity.
      block_gate: one more gate switching the whole block's output.
      gate_config: the gates' hyperparameters (``GateConfig``); default
        ``GateConfig(init_keep_prob=0.9)``.
      use_bias: whether the dense layers add biases.
      kernel_init: initializer of both kernels.
      bias_init: initializer of the biases.
      dtype: computation dtype.
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the products.
      rngs: ``nnx.Rngs`` for initialisation and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        *,
        activation: Callable[[Array], Array] = nnx.gelu,
        block_gate: bool = False,
        gate_config: GateConfig | None = None,
        use_bias: bool = True,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        self.in_features = positive_int("in_features", in_features)
        self.hidden_features = positive_int("hidden_features", hidden_features)
        self.out_features = positive_int("out_features", out_features or in_features)
        check_init_arguments(
            type(self).__name__, rngs, kernel_init=kernel_init, bias_init=bias_init, activation=activation
        )
        config = resolve_gate_config(self, gate_config, gate_keywords)
        self.activation = activation
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        i, h, o = self.in_features, self.hidden_features, self.out_features
        self.kernel1 = new_param(kernel_init, rngs, (i, h), param_dtype)
        self.kernel2 = new_param(kernel_init, rngs, (h, o), param_dtype)
        self.bias1 = optional_param(use_bias, bias_init, rngs, (h,), param_dtype)
        self.bias2 = optional_param(use_bias, bias_init, rngs, (o,), param_dtype)
        self.hidden_gate = config.build((h,), rngs=rngs)
        self.block_gate = config.build((1,), rngs=rngs) if block_gate else nnx.data(None)

    def gates(self) -> list[HardConcreteGate]:
        """The hidden-unit gates, then the block gate when present."""
        return [g for g in (self.hidden_gate, self.block_gate) if g is not None]

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """Applies the block.

        Args:
          x: inputs of shape ``(..., in_features)``.
          deterministic: overrides the gates' mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's gate noise.

        Returns:
          Shape ``(..., out_features)``.
        """
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}.")
        record.note(self, int(np.prod(x.shape[1:-1])) if x.ndim > 1 else 1)
        z = self.hidden_gate(deterministic=deterministic, rngs=rngs)
        zb = self._block(deterministic, rngs)
        dtype = compute_dtype(x.dtype, self.kernel1.dtype, self.dtype)
        h = jnp.dot(x.astype(dtype), self.kernel1[...].astype(dtype), precision=self.precision)
        if self.bias1 is not None:
            h = h + _lead(self.bias1[...].astype(dtype), h.ndim)
        h = self.activation(h) * _lead(z.astype(dtype), h.ndim)
        y = jnp.dot(h, self.kernel2[...].astype(dtype), precision=self.precision)
        if self.bias2 is not None:
            y = y + _lead(self.bias2[...].astype(dtype), y.ndim)
        return y if zb is None else y * _lead(zb.astype(dtype), y.ndim)

    def expected_size(self, per: SizeUnit, positions: Any = None) -> Array:
        """Expected kernel entries, open gates or FLOPs per example (``positions``: tokens per example).

        Args:
          per: ``"parameter"``, ``"gate"`` or ``"flops"``.
          positions: number of tokens per example (FLOPs only; 1 for ``(batch, features)`` inputs).

        Returns:
          A float32 scalar, differentiable in the gate logits.
        """
        if per == "gate":
            return self._gate_count()
        units = self._p_block() * self.hidden_gate.penalty()
        entries = (self.in_features + self.out_features) * units
        if per == "parameter":
            return entries
        return 2.0 * float(positions if positions is not None else 1) * entries

    def full_size(self, per: SizeUnit, positions: Any = None) -> float:
        """The size with every gate open (same units as ``expected_size``)."""
        if per == "gate":
            return float(sum(int(np.prod(g.shape)) for g in self.gates()))
        entries = float(self.hidden_features * (self.in_features + self.out_features))
        return (
            entries
            if per == "parameter"
            else 2.0 * float(positions if positions is not None else 1) * entries
        )

    def _eval_units(self) -> np.ndarray:
        z = np.asarray(self.hidden_gate.eval_gates(), np.float64)
        if self.block_gate is not None:
            z = z * float(np.asarray(self.block_gate.eval_gates())[0])
        return z

    def open_units(self) -> np.ndarray:
        """Indices of the hidden units open in eval mode."""
        return np.flatnonzero(self._eval_units() > 0)

    def eval_size(self) -> int:
        """Kernel entries in use in eval mode."""
        return int((self._eval_units() > 0).sum() * (self.in_features + self.out_features))

    def compressed(self) -> CompressedMLPBlock:
        """The block without its closed hidden units (gates folded into the second kernel)."""
        z = self._eval_units()
        keep = np.flatnonzero(z > 0)
        get = lambda v: None if v is None else np.asarray(v[...], np.float32)  # noqa: E731
        k1, k2 = np.asarray(self.kernel1[...], np.float32), np.asarray(self.kernel2[...], np.float32)
        b1, b2 = get(self.bias1), get(self.bias2)
        zb = 1.0 if self.block_gate is None else float(np.asarray(self.block_gate.eval_gates())[0])
        return CompressedMLPBlock(
            k1[:, keep],
            None if b1 is None else b1[keep],
            k2[keep] * z[keep][:, None].astype(np.float32),
            None if b2 is None else b2 * zb,
            activation=self.activation,
            dtype=self.dtype,
            precision=self.precision,
        )


class CompressedMLPBlock(nnx.Module):
    """Dense MLP block over the kept hidden units, made by ``L0MLPBlock.compressed``."""

    def __init__(self, k1, b1, k2, b2, *, activation, dtype=None, precision=None):
        p = lambda a: None if a is None else nnx.Param(jnp.asarray(a))  # noqa: E731
        self.kernel1, self.kernel2 = nnx.Param(jnp.asarray(k1)), nnx.Param(jnp.asarray(k2))
        self.bias1, self.bias2 = nnx.data(p(b1)), nnx.data(p(b2))
        self.activation = activation
        self.dtype, self.precision = dtype, precision

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """As ``L0MLPBlock`` in eval mode (``deterministic`` and ``rngs`` are ignored)."""
        x = jnp.asarray(x)
        dtype = compute_dtype(x.dtype, self.kernel1.dtype, self.dtype)
        h = jnp.dot(x.astype(dtype), self.kernel1[...].astype(dtype), precision=self.precision)
        if self.bias1 is not None:
            h = h + _lead(self.bias1[...].astype(dtype), h.ndim)
        y = jnp.dot(self.activation(h), self.kernel2[...].astype(dtype), precision=self.precision)
        return y if self.bias2 is None else y + _lead(self.bias2[...].astype(dtype), y.ndim)
