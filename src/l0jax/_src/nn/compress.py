"""Compression: a smaller dense Flax model in which closed neurons and channels are removed.

``compress(model)`` folds the deterministic (eval) gates into the weights and removes every unit
whose removal provably leaves the eval outputs unchanged:

* an input unit (feature or channel) whose weights are all zero after gating is *unused*: it is
  dropped from the layer, and, when the layer that produces it is known, from that layer's
  outputs too (with input-neuron gates this is the paper's physical shrinking, 784-300-100 ->
  219-214-100);
* an output unit whose weights and bias are all zero (closed output gate, structured or
  depthwise channel, or pruned) is *dead*: it outputs zero, so the next layer's weights for it
  are dropped along with it. This needs the operations between the two layers to map zero to
  zero (relu, gelu, tanh, silu, max/avg pooling, flatten, dropout in eval); pass
  ``remove_dead_outputs=False`` otherwise.

Which layer feeds which is not visible in a Flax module, so layers are linked through *chains*:
lists of L0 layers in data-flow order, each feeding the next through such zero-preserving,
per-unit operations (a channels-last flatten between a convolution and a dense layer is
allowed). ``SparseMLP`` and models defining ``l0_chain()`` give their chain; ``nnx.Sequential``
chains consecutive L0 layers (plain functions and ``nnx.Dropout`` between them are fine); other
models pass ``chain=[...]``. A layer in no chain still sheds its unused inputs (by gathering the
ones it uses) but keeps all its outputs. The last layer of a chain keeps all its outputs, so the
model's output shape never changes.

l0-python has no compression (its ``prune_model`` only zeroes weights in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.typing import Dtype, PaddingLike, PrecisionLike

from l0jax._src.nn.gate import RngsLike
from l0jax._src.nn.layers import L0Conv, L0DepthwiseConv, L0Layer, L0Linear
from l0jax._src.nn.model import l0_layers, path_name, structured_modules
from l0jax._src.nn.structured import L0Structured

Array = jax.Array
Shrinkable = L0Linear | L0Conv | L0DepthwiseConv

# The layers of one chain (modules or dotted paths), a list of chains, or None for the default.
ChainSpec = Sequence[nnx.Module | str] | Sequence[Sequence[nnx.Module | str]] | None


def _load(
    layer: CompressedLinear | CompressedConv,
    kernel: Array,
    bias: Array | None,
    input_index: Sequence[int] | np.ndarray | None,
) -> None:
    """Puts the folded weights into a freshly built (zero-initialised) compressed layer."""
    layer.kernel[...] = kernel
    if bias is not None:
        assert layer.bias is not None  # built with use_bias=bias is not None
        layer.bias[...] = jnp.asarray(bias)
    layer.input_index = None if input_index is None else tuple(int(i) for i in input_index)


def _gather_inputs(layer: CompressedLinear | CompressedConv, x: Array) -> Array:
    """The input units (last axis) a compressed layer uses, or all of ``x`` when it uses all."""
    x = jnp.asarray(x)
    if layer.input_index is None:
        return x
    return jnp.take(x, np.asarray(layer.input_index, np.int32), axis=-1)


class CompressedLinear(nnx.Linear):
    """The dense layer ``compress`` puts in place of an ``L0Linear``: an ``nnx.Linear`` that first
    gathers the input features it uses.

    Args:
      kernel: (in, out) weights with the eval gates folded in.
      bias: (out,) or None.
      input_index: indices of the input features to use (last axis), or None for all.
      dtype: computation dtype.
      precision: ``jax.lax.Precision`` of the product.
    """

    input_index: tuple[int, ...] | None

    def __init__(
        self,
        kernel: Array,
        bias: Array | None,
        *,
        input_index: Sequence[int] | np.ndarray | None = None,
        dtype: Dtype | None = None,
        precision: PrecisionLike = None,
    ):
        kernel = jnp.asarray(kernel)
        super().__init__(
            kernel.shape[0],
            kernel.shape[1],
            use_bias=bias is not None,
            dtype=dtype,
            param_dtype=kernel.dtype,
            precision=precision,
            kernel_init=nnx.initializers.zeros_init(),
            bias_init=nnx.initializers.zeros_init(),
            rngs=nnx.Rngs(0),
        )
        _load(self, kernel, bias, input_index)

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """x: (..., n_inputs) -> (..., out). ``deterministic``/``rngs`` are accepted and ignored, so
        model code written for the gated layer runs unchanged.
        """
        del deterministic, rngs
        return super().__call__(_gather_inputs(self, x))


class CompressedConv(nnx.Conv):
    """The dense layer ``compress`` puts in place of an ``L0Conv`` or ``L0DepthwiseConv``: an
    ``nnx.Conv`` that first gathers the input channels it uses.

    Args:
      kernel: ``(*window, in / groups, out)`` weights with the eval gates folded in.
      bias: (out,) or None.
      strides: one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or (low, high) pairs.
      kernel_dilation: one int per spatial axis.
      feature_group_count: 1, or the number of channels of a depthwise convolution.
      input_index: indices of the input channels to use, or None for all.
      dtype: computation dtype.
      precision: ``jax.lax.Precision`` of the convolution.
    """

    input_index: tuple[int, ...] | None

    def __init__(
        self,
        kernel: Array,
        bias: Array | None,
        *,
        strides: Sequence[int],
        padding: PaddingLike,
        kernel_dilation: Sequence[int],
        feature_group_count: int = 1,
        input_index: Sequence[int] | np.ndarray | None = None,
        dtype: Dtype | None = None,
        precision: PrecisionLike = None,
    ):
        kernel = jnp.asarray(kernel)
        super().__init__(
            kernel.shape[-2] * feature_group_count,
            kernel.shape[-1],
            tuple(kernel.shape[:-2]),
            strides=tuple(strides),
            padding=padding,
            kernel_dilation=tuple(kernel_dilation),
            feature_group_count=feature_group_count,
            use_bias=bias is not None,
            dtype=dtype,
            param_dtype=kernel.dtype,
            precision=precision,
            kernel_init=nnx.initializers.zeros_init(),
            bias_init=nnx.initializers.zeros_init(),
            rngs=nnx.Rngs(0),
        )
        _load(self, kernel, bias, input_index)

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """``x``: ``(*batch, *spatial, n_inputs)`` -> ``(*batch, *spatial_out, out)``.

        ``deterministic`` and ``rngs`` are accepted and ignored.
        """
        del deterministic, rngs
        return super().__call__(_gather_inputs(self, x))


# ----------------------------------------------------------------------------- chains


def _lookup(model: Any, path: tuple) -> Any:
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _parse_path(item: str) -> tuple:
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in item.split(".")) if item else ()


def _default_chains(model: Any) -> list[list[Any]]:
    if hasattr(model, "l0_chain") and callable(model.l0_chain):
        return [list(cast(Any, model.l0_chain()))]  # the model's own list of layers
    if isinstance(model, nnx.Sequential):
        chains, run = [], []
        for f in model.layers:
            if isinstance(f, L0Layer):
                run.append(f)
            elif isinstance(f, nnx.Module) and not isinstance(f, nnx.Dropout):
                chains, run = chains + [run], []  # an unknown module: the chain cannot see through it
        return [c for c in chains + [run] if c]
    return []


def _resolve_chains(
    model: Any, chain: Any, layers: list[tuple[tuple, L0Layer]]
) -> list[list[tuple[tuple, L0Layer]]]:
    path_of = {id(m): p for p, m in layers}
    if chain is None:
        raw = _default_chains(model)
    else:
        items = list(chain)
        raw = (
            [list(c) for c in items]
            if items and all(isinstance(c, (list, tuple)) and not _is_path_tuple(c) for c in items)
            else [items]
        )
    chains: list[list[tuple[tuple, L0Layer]]] = []
    seen: set[int] = set()
    for c in raw:
        resolved = []
        for item in c:
            module = item
            if isinstance(item, str):
                module = _lookup(model, _parse_path(item))
            elif isinstance(item, tuple):
                module = _lookup(model, item)
            if id(module) not in path_of:
                raise ValueError(
                    f"chain item {item!r} is not an L0 layer of this model; give L0 layers (or their "
                    f"dotted paths such as 'layers.0') in data-flow order."
                )
            if id(module) in seen:
                raise ValueError(f"layer {path_name(path_of[id(module)])!r} appears twice in the chains.")
            seen.add(id(module))
            resolved.append((path_of[id(module)], module))
        if resolved:
            chains.append(resolved)
    for p, m in layers:
        if id(m) not in seen:
            chains.append([(p, m)])
    return chains


def _is_path_tuple(c: Any) -> bool:
    return (
        isinstance(c, tuple)
        and all(isinstance(k, (str, int)) for k in c)
        and not any(isinstance(k, L0Layer) for k in c)
    )


# ----------------------------------------------------------------------------- unit masks


def _is_conv(layer: L0Layer) -> bool:
    return isinstance(layer, (L0Conv, L0DepthwiseConv))


def _rows_alive(kernel: np.ndarray) -> np.ndarray:
    """Input units (features or channels) with any non-zero weight, for dense and plain conv."""
    k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
    return np.any(k != 0, axis=(0, 2))


def _dead_outputs(kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    dead = cast(np.ndarray, np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0))  # axis 0: a vector
    return dead if bias is None else dead & (bias == 0)


def _at_least_one(mask: np.ndarray) -> np.ndarray:
    # An empty layer cannot be built; keeping one removable unit is still exact.
    if mask.size and not mask.any():
        mask = mask.copy()
        mask[0] = True
    return mask


def _channel_view(consumer: L0Layer, producer: Shrinkable, need_in: np.ndarray) -> np.ndarray:
    """Maps a consumer's per-input mask onto the producer's output units (flatten-aware)."""
    n_out = producer.out_features
    if need_in.size == n_out:
        return need_in
    if isinstance(consumer, L0Linear) and _is_conv(producer) and need_in.size % n_out == 0:
        # Channels-last flatten: feature f is channel f % C (any over axis 0 of a matrix: a vector).
        return cast(np.ndarray, need_in.reshape(-1, n_out).any(axis=0))
    raise ValueError(
        f"cannot link {type(producer).__name__} ({n_out} outputs) to {type(consumer).__name__} "
        f"({need_in.size} inputs) in a chain: sizes must match, or be a channels-last flatten of a "
        f"convolution's channels."
    )


@nnx.jit
def _all_eval_params(model: nnx.Module) -> dict[str, tuple[Array, Array | None]]:
    """Every L0 layer's kernel and bias with eval gates folded in, in one compiled call."""
    return {path_name(p): layer.eval_params() for p, layer in l0_layers(model)}


def _compress_chain(
    chain: list[tuple[tuple, L0Layer]], folded: dict, remove_dead_outputs: bool
) -> list[nnx.Module]:
    layers = [cast(Shrinkable, m) for _, m in chain]  # compress() admits no other L0 layer
    params = []
    for path, _ in chain:
        k, b = folded[path_name(path)]
        params.append((np.asarray(k), None if b is None else np.asarray(b)))
    n = len(layers)
    # Every entry is set by the first loop before it is read.
    kept_out: list[np.ndarray] = [np.empty(0, bool)] * n  # kept output units of layer j
    need_in: list[np.ndarray] = [np.empty(0, bool)] * n  # input units layer j uses (its own view)
    for j in range(n - 1, -1, -1):
        layer, (k, b) = layers[j], params[j]
        out = np.ones(layer.out_features, bool) if j == n - 1 else kept_out[j]
        if isinstance(layer, L0DepthwiseConv):
            m = layer.channel_multiplier
            chans = _at_least_one(cast(np.ndarray, out.reshape(layer.features, m).any(axis=1)))
            out = np.repeat(chans, m)  # a kept channel computes all its filters
            need = chans
        else:
            need = _rows_alive(k)
        kept_out[j], need_in[j] = out, need
        if j > 0:
            producer = layers[j - 1]
            ch = _channel_view(layer, producer, need)
            if remove_dead_outputs and not isinstance(layer, L0DepthwiseConv):
                # A depthwise channel fed zeros still emits its bias, so only its own gate may remove it.
                ch = ch & ~_dead_outputs(*params[j - 1])
            kept_out[j - 1] = _at_least_one(ch)
    modules = []
    for j, layer in enumerate(layers):
        k, b = params[j]
        out = kept_out[j]
        in_kept = kept_out[j - 1] if j > 0 else None
        input_index = None
        if isinstance(layer, L0DepthwiseConv):
            chans = need_in[j] if in_kept is None else in_kept
            if in_kept is None and not chans.all():
                input_index = np.flatnonzero(chans)
            k2, b2 = k[..., out], None if b is None else b[out]
            modules.append(
                CompressedConv(
                    k2,
                    b2,
                    strides=layer.strides,
                    padding=layer.padding,
                    kernel_dilation=layer.kernel_dilation,
                    feature_group_count=int(chans.sum()),
                    input_index=input_index,
                    dtype=layer.dtype,
                    precision=layer.precision,
                )
            )
            continue
        if in_kept is None:  # first layer of the chain: gather the inputs it uses
            rows = _at_least_one(need_in[j])
            if not rows.all():
                input_index = np.flatnonzero(rows)
            k2 = k[..., rows, :]
        elif k.shape[-2] == in_kept.size:
            k2 = k[..., in_kept, :]
        else:  # dense layer after a flattened convolution: drop removed channels, gather unused features
            c = in_kept.size
            k3 = k.reshape(-1, c, k.shape[-1])[:, in_kept, :]
            k2 = k3.reshape(-1, k.shape[-1])
            alive = _at_least_one(need_in[j].reshape(-1, c)[:, in_kept].reshape(-1))
            if not alive.all():
                input_index = np.flatnonzero(alive)
                k2 = k2[alive]
        k2, b2 = k2[..., out], None if b is None else b[out]
        if isinstance(layer, L0Linear):
            modules.append(
                CompressedLinear(
                    k2, b2, input_index=input_index, dtype=layer.dtype, precision=layer.precision
                )
            )
        else:
            modules.append(
                CompressedConv(
                    k2,
                    b2,
                    strides=layer.strides,
                    padding=layer.padding,
                    kernel_dilation=layer.kernel_dilation,
                    input_index=input_index,
                    dtype=layer.dtype,
                    precision=layer.precision,
                )
            )
    return modules


def compress(model: nnx.Module, *, chain: ChainSpec = None, remove_dead_outputs: bool = True) -> nnx.Module:
    """Returns a smaller dense copy of ``model`` with closed neurons and channels removed.

    Each L0 layer is replaced by a ``CompressedLinear`` or ``CompressedConv`` (subclasses of
    ``nnx.Linear``/``nnx.Conv``) holding ``kernel * eval_gate``; each ``L0MultiHeadAttention`` and
    ``L0MLPBlock`` by a dense module without its closed heads, value dimensions or hidden units
    (``CompressedMultiHeadAttention``, ``CompressedMLPBlock``); the rest of the model is copied.
    The copy's outputs equal the gated model's eval-mode outputs up to float rounding; the input
    model is not modified. See the module docstring for which units are removed and how chains
    link layers.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import SparseMLP, compress
      >>> mlp = SparseMLP((20, 16, 3), gate="input", rngs=nnx.Rngs(0))
      >>> # Close the input gates of 6 of the 16 hidden units.
      >>> mlp.layers[1].gate.log_alpha[...] = jnp.where(jnp.arange(16) < 10, 3.0, -3.0)
      >>> small = compress(mlp)            # uses mlp.l0_chain()
      >>> small.layers[0].kernel.shape, small.layers[1].kernel.shape
      ((20, 10), (10, 3))

    Args:
      model: a Flax NNX module with L0 layers or gated blocks (or one of them itself).
      chain: None (use ``model.l0_chain()`` or an ``nnx.Sequential``'s order), a list of L0
        layers (modules or dotted paths such as ``"conv1"`` or ``"layers.0"``) in data-flow
        order, or a list of such lists.
      remove_dead_outputs: also remove output units whose weights and bias are all zero (they
        output zero, which the next layer must see as zero: the operations in between must map
        0 to 0).

    Returns:
      The compressed model, of the same class, in which every L0 layer is a dense layer.

    Raises:
      ValueError: when the model has no L0 layers or one of another ``L0Layer`` subclass, a chain
        item is not one of its L0 layers, or two linked layers' sizes do not fit.
    """
    structured = structured_modules(model)
    if isinstance(model, L0Structured):
        return model.compressed()
    layers = l0_layers(model)
    if not layers and not structured:
        raise ValueError(
            "compress: the model holds no L0 layers (L0Linear, L0Conv, L0DepthwiseConv) or gated "
            "blocks (L0MultiHeadAttention, L0MLPBlock)."
        )
    for path, layer in layers:
        if not isinstance(layer, (L0Linear, L0Conv, L0DepthwiseConv)):
            raise ValueError(
                f"compress: layer {path_name(path)!r} is a {type(layer).__name__}; compress knows how to "
                "shrink L0Linear, L0Conv and L0DepthwiseConv only (prune works on every L0Layer)."
            )
    replacements: list[tuple[tuple, nnx.Module]] = []
    if layers:
        chains = _resolve_chains(model, chain, layers)
        folded = jax.device_get(_all_eval_params(model))
        for c in chains:
            replacements += list(
                zip([p for p, _ in c], _compress_chain(c, folded, remove_dead_outputs), strict=True)
            )
    # Attention and MLP blocks shrink on their own: their input and output widths stay.
    replacements += [(path, module.compressed()) for path, module in structured]
    if len(replacements) == 1 and replacements[0][0] == ():
        return replacements[0][1]
    out = nnx.clone(model)
    for path, module in replacements:
        parent, key = _lookup(out, path[:-1]), path[-1]
        if isinstance(key, int):
            parent[key] = module
        else:
            setattr(parent, key, module)
    return out
