"""L0-gated layers: dense, convolution (1-, 2-, 3-D), depthwise convolution, and an MLP of them.

Every layer holds a dense ``kernel`` (and ``bias``) as ``nnx.Param`` and a ``HardConcreteGate``
named ``gate``; its forward pass uses ``kernel * z`` with z broadcast over the parameters each gate
switches (Louizos et al. 2018, eq. 6 with the group sparsity of section 4). Gate granularities:

* ``"weight"``: one gate per kernel entry (l0-python's ``L0Linear``/unstructured ``L0Conv2d``).
* ``"input"``: one gate per input neuron, a group of ``out_features`` weights (the paper's MLP;
  a closed input neuron can be removed from the layer and from the layer before it).
* ``"output"``: one gate per output neuron or channel (``structured=True`` for convolutions);
  the bias of a closed unit is closed too, so the unit outputs exactly zero and can be removed.

Differences from l0-python 0.6 (bugs fixed):

* Biases of closed output units are gated with them (l0-python's structured ``L0Conv2d`` and
  ``L0DepthwiseConv2d`` keep emitting the bias of a closed channel, so they were never removable).
* ``penalty()`` counts expected non-zero *parameters* (gate probability times group size, the
  paper's eq. 12 with groups); l0-python's structured conv counted channels, mixing units with the
  per-weight layers in the same sum.
* ``log_alpha`` is not clamped to +-20: the clamp made the gradient exactly zero past the bound,
  freezing gates there; the pure core is finite for any ``log_alpha`` (+-1e3 tested).
* Convolutions accept any spatial rank and Flax's channels-last layout; the depthwise layer
  supports a channel multiplier and can be pruned (l0-python's ``prune_model`` raised
  AttributeError on ``L0DepthwiseConv2d``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, Unpack, get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.typing import Dtype, Initializer, LaxPadding, PaddingLike, PrecisionLike
from jax import lax

from l0jax._src import checks
from l0jax._src.nn import record
from l0jax._src.nn.gate import (
    GateConfig,
    GateKeywords,
    HardConcreteGate,
    RngsLike,
    compiled_l0_penalty,
    resolve_gate_config,
)

Array = jax.Array
Granularity = Literal["weight", "input", "output"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
default_kernel_init = nnx.initializers.lecun_normal()
default_bias_init = nnx.initializers.zeros_init()


def compute_dtype(x_dtype: Dtype, param_dtype: Dtype, dtype: Dtype | None = None) -> Dtype:
    """The dtype a layer computes in: ``dtype`` if given, else the wider of input and parameters.

    Written out explicitly because the test suite (and careful users) run with strict dtype
    promotion, under which ``x @ kernel`` with mixed float dtypes is an error.
    """
    if dtype is not None:
        return jnp.dtype(dtype)
    x_dtype, param_dtype = jnp.dtype(x_dtype), jnp.dtype(param_dtype)
    if not jnp.issubdtype(x_dtype, jnp.floating):
        return param_dtype
    if x_dtype == param_dtype:
        return x_dtype
    if x_dtype.itemsize != param_dtype.itemsize:
        return x_dtype if x_dtype.itemsize > param_dtype.itemsize else param_dtype
    return jnp.dtype(jnp.float32)  # bfloat16 vs float16: neither holds the other


def _last_axis(v: Array, ndim: int) -> Array:
    """Reshapes a vector to broadcast over the last axis of an ``ndim``-array (rank promotion is explicit)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, raising ValueError naming ``name`` otherwise (widths, head counts)."""
    return checks.check_int_at_least(name, value, 1)


def check_init_arguments(owner: str, rngs: Any, **initializers: Any) -> None:
    """Raises TypeError naming the argument when ``rngs`` is not an ``nnx.Rngs`` or an initializer
    (or activation) is not callable: both would otherwise fail deep inside Flax without a name.
    """
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"rngs of {owner} must be an nnx.Rngs (e.g. rngs=nnx.Rngs(0)): its params stream draws "
            f"the initial weights; got {type(rngs).__name__}."
        )
    for name, init in initializers.items():
        if not callable(init):
            raise TypeError(
                f"{name} of {owner} must be callable (e.g. a function of nnx.initializers or nnx.relu), "
                f"got {init!r}."
            )


def new_param(init: Callable, rngs: nnx.Rngs, shape: tuple[int, ...], dtype: Dtype) -> nnx.Param:
    """A parameter of ``shape`` drawn by ``init`` from the ``params`` stream of ``rngs``."""
    return nnx.Param(init(rngs.params(), shape, dtype))


def optional_param(
    use: bool, init: Callable, rngs: nnx.Rngs, shape: tuple[int, ...], dtype: Dtype
) -> nnx.Param | None:
    """``new_param(...)`` when ``use`` is true (a bias the module adds), else ``nnx.data(None)``."""
    return new_param(init, rngs, shape, dtype) if use else nnx.data(None)


# The names of the subclass protocol before it was made public; a subclass that still defines them
# keeps working (with a DeprecationWarning when the class is defined).
_OLD_HOOKS = {"_kernel_view": "kernel_view", "_bias_view": "bias_view", "_apply": "forward"}


class L0Layer(nnx.Module):
    """Base of the gated layers: ``y = forward(x, kernel * kernel_view(z), bias * bias_view(z))``.

    A subclass sets ``kernel``, ``bias`` (or ``nnx.data(None)``), ``gate`` and ``granularity`` and
    implements the three methods of the protocol: ``kernel_view`` (gate-shaped array ->
    broadcastable to the kernel), ``bias_view`` (gate-shaped array -> bias shape, or None when
    biases are not gated) and ``forward`` (the layer's operation on gated parameters). The
    model-wide utilities (``l0_penalty``, ``l2_penalty``, ``sparsity_stats``, ``prune``, ...) only
    use this interface; ``compress`` knows the built-in layers only. (Subclasses written for the
    earlier names ``_kernel_view``, ``_bias_view`` and ``_apply`` still work, with a
    DeprecationWarning.)
    """

    kernel: nnx.Param
    bias: nnx.Param | None
    gate: HardConcreteGate
    granularity: str
    gate_defaults: ClassVar[GateConfig] = GateConfig()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in _OLD_HOOKS.items():
            if old in vars(cls) and new not in vars(cls):
                warnings.warn(
                    f"{cls.__name__}.{old} is the old name of L0Layer.{new}: rename the method to {new}.",
                    DeprecationWarning,
                    stacklevel=3,  # the class statement (through ABCMeta.__new__)
                )
                setattr(cls, new, vars(cls)[old])

    def _init_params(
        self,
        kernel_shape: tuple[int, ...],
        bias_shape: tuple[int, ...],
        gate_shape: tuple[int, ...],
        *,
        use_bias: bool,
        kernel_init: Initializer,
        bias_init: Initializer,
        param_dtype: Dtype,
        gate_config: GateConfig,
        rngs: nnx.Rngs,
    ) -> None:
        """Sets ``kernel``, ``bias`` and ``gate`` (of ``param_dtype``), drawn in this order from ``rngs``."""
        check_init_arguments(type(self).__name__, rngs, kernel_init=kernel_init, bias_init=bias_init)
        self.kernel = new_param(kernel_init, rngs, kernel_shape, param_dtype)
        self.bias = optional_param(use_bias, bias_init, rngs, bias_shape, param_dtype)
        self.gate = gate_config.build(gate_shape, param_dtype=param_dtype, rngs=rngs)

    def kernel_view(self, z: Array) -> Array:
        """``z``, an array of the gate's shape, laid out to broadcast against the kernel."""
        raise NotImplementedError

    def bias_view(self, z: Array) -> Array | None:
        """``z`` laid out like the bias, or None when the gates do not switch the bias."""
        raise NotImplementedError

    def forward(self, x: Array, kernel: Array, bias: Array | None) -> Array:
        """The layer's operation on inputs ``x`` with the gated ``kernel`` and ``bias`` (or None)."""
        raise NotImplementedError

    def _gated(self, z: Array) -> tuple[Array, Array | None]:
        kernel = self.kernel[...]
        kernel = kernel * self.kernel_view(z).astype(kernel.dtype)
        bias = None if self.bias is None else self.bias[...]
        if bias is not None:
            zb = self.bias_view(z)
            if zb is not None:
                bias = bias * zb.astype(bias.dtype)
        return kernel, bias

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """Applies the layer with sampled (training) or deterministic (eval) gates.

        Args:
          x: inputs; see the subclass for the shape.
          deterministic: overrides the gate's mode for this call.
          rngs: key or ``nnx.Rngs`` for this call's gate noise.

        Returns:
          The layer's outputs.
        """
        x = jnp.asarray(checks.real_input("x", x))  # text, objects or complex numbers: named here
        z = self.gate(deterministic=deterministic, rngs=rngs)
        kernel, bias = self._gated(z)
        y = self.forward(x, kernel, bias)
        record.note(self, record.output_positions(y))
        return y

    def eval_params(self) -> tuple[Array, Array | None]:
        """Kernel and bias with the deterministic (eval) gates folded in: what eval mode uses."""
        return self._gated(self.gate.eval_gates())

    def group_size(self) -> int:
        """Number of kernel entries each gate switches."""
        return int(np.prod(self.kernel.shape)) // int(np.prod(self.gate.shape))

    def penalty(self) -> Array:
        """Expected number of non-zero kernel entries: ``sum_g |g| P(z_g != 0)`` (eq. 12 with groups).

        Returns:
          A float32 scalar. Biases are not counted (as in the paper's code).
        """
        g = self.gate
        return compiled_l0_penalty(
            g.log_alpha[...], g.temperature[...], gamma=g.gamma, zeta=g.zeta, group_size=self.group_size()
        )

    def expected_l2(self) -> Array:
        """Expected squared L2 norm of the gated kernel, ``sum_j P(z_g(j) != 0) theta_j**2`` (eq. 14).

        Returns:
          A float32 scalar; only weights whose gate is expected open pay.
        """
        kernel = self.kernel[...]
        p = jnp.broadcast_to(self.kernel_view(self.gate.prob_nonzero()), kernel.shape)
        k32 = kernel.astype(jnp.float32)
        return jnp.sum(p.astype(jnp.float32) * k32 * k32)

    def _input_check(self, x: Array, n_in: int, min_ndim: int, layout: str) -> None:
        if x.ndim < min_ndim or x.shape[-1] != n_in:
            raise ValueError(
                f"x of shape {x.shape} does not fit {type(self).__name__}: expected {layout} with "
                f"{n_in} features on the last axis."
            )


class L0Linear(L0Layer):
    """A dense layer ``y = x @ (kernel * z) + bias`` with hard-concrete gates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import L0Linear
      >>> layer = L0Linear(784, 300, gate="input", init_keep_prob=0.8, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 784))).shape
      (2, 300)

    Args:
      in_features: size of the last axis of the inputs.
      out_features: number of output units.
      gate: ``"weight"`` (one gate per weight, l0-python), ``"input"`` (one per input neuron,
        the paper's group sparsity) or ``"output"`` (one per output unit, bias gated too).
      use_bias: whether to add a bias.
      gate_config: the gates' hyperparameters (``GateConfig``); default ``GateConfig()``.
      kernel_init: initializer of the ``(in_features, out_features)`` kernel.
      bias_init: initializer of the ``(out_features,)`` bias.
      dtype: computation dtype (default: the wider of inputs and parameters).
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the matrix product.
      rngs: ``nnx.Rngs`` for initialisation (``params``) and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gate: Granularity = "weight",
        use_bias: bool = True,
        gate_config: GateConfig | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        in_features = positive_int("in_features", in_features)
        out_features = positive_int("out_features", out_features)
        checks.check_choice("gate", gate, GRANULARITIES)
        config = resolve_gate_config(self, gate_config, gate_keywords)
        gate_shape = {
            "weight": (in_features, out_features),
            "input": (in_features,),
            "output": (out_features,),
        }
        self.in_features, self.out_features = in_features, out_features
        self.granularity = gate
        self.use_bias = use_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self._init_params(
            (in_features, out_features),
            (out_features,),
            gate_shape[gate],
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=param_dtype,
            gate_config=config,
            rngs=rngs,
        )

    def kernel_view(self, z: Array) -> Array:
        """``z`` (the gate's shape) as a column, a row or the kernel's shape, by granularity."""
        if self.granularity == "input":
            return z[:, None]
        if self.granularity == "output":
            return z[None, :]
        return z

    def bias_view(self, z: Array) -> Array | None:
        """``z`` itself for output gates (one per bias entry), None otherwise (the bias is not gated)."""
        return z if self.granularity == "output" else None

    def forward(self, x: Array, kernel: Array, bias: Array | None) -> Array:
        """x: (..., in_features) -> (..., out_features)."""
        self._input_check(x, self.in_features, 1, "(..., in_features)")
        dtype = compute_dtype(x.dtype, kernel.dtype, self.dtype)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype), precision=self.precision)
        return y if bias is None else y + _last_axis(bias.astype(dtype), y.ndim)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _sequence(name: str, value: Any, expected: str) -> tuple:
    """``value`` as a tuple, raising TypeError naming ``name`` when it is not one (a bool, a float, None)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}.") from None


def _tuple(name: str, value: Any, n: int) -> tuple[int, ...]:
    if _is_int(value):
        value = (int(value),) * n
    value = _sequence(name, value, f"a positive int or a sequence of {n} positive ints")
    if len(value) != n or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value
    ):
        raise ValueError(f"{name} must be a positive int or a sequence of {n} positive ints, got {value!r}.")
    return tuple(int(v) for v in value)


def _padding(padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"unknown padding {padding!r}; choose 'SAME', 'VALID', an int or (low, high) pairs."
            )
        return padding.upper()
    if _is_int(padding):
        return ((int(padding), int(padding)),) * n
    expected = f"'SAME', 'VALID', an int, {n} ints or {n} (low, high) pairs"
    pads = _sequence("padding", padding, expected)
    if len(pads) == n and all(_is_int(p) for p in pads):
        return tuple((int(p), int(p)) for p in pads)
    try:
        if len(pads) == n and all(np.ndim(p) == 1 and len(p) == 2 for p in pads):
            return tuple((int(lo), int(hi)) for lo, hi in pads)
    except (TypeError, ValueError):
        pass  # ragged, or not numbers: the error below says what padding may be
    raise ValueError(
        f"padding {padding!r} must be 'SAME', 'VALID', an int, {n} ints or {n} (low, high) pairs."
    )


def conv_channels_last(
    x: Array,
    kernel: Array,
    *,
    strides: tuple[int, ...],
    padding: LaxPadding,
    kernel_dilation: tuple[int, ...],
    feature_group_count: int,
    precision: PrecisionLike,
) -> Array:
    """Convolution in Flax's layout: x (*batch, *spatial, C_in), kernel (*window, C_in/groups, C_out).

    Any number of leading batch axes (including none) is flattened for ``lax.conv_general_dilated``
    and restored afterwards, as ``nnx.Conv`` does.
    """
    n = kernel.ndim - 2
    batch_shape = x.shape[: x.ndim - (n + 1)]
    xb = x.reshape((-1,) + x.shape[x.ndim - (n + 1) :])
    ndim = n + 2
    lhs = (0, ndim - 1) + tuple(range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
    dn = lax.ConvDimensionNumbers(lhs, rhs, lhs)
    y = lax.conv_general_dilated(
        xb,
        kernel,
        strides,
        padding,
        rhs_dilation=kernel_dilation,
        dimension_numbers=dn,
        feature_group_count=feature_group_count,
        precision=precision,
    )
    return y.reshape(batch_shape + y.shape[1:])


class _ConvBase(L0Layer):
    """Shared conv attributes and forward pass (channels-last, any spatial rank)."""

    in_features: int
    out_features: int
    feature_group_count: int

    def _init_conv(self, kernel_size, strides, padding, kernel_dilation, dtype, param_dtype, precision):
        if _is_int(kernel_size):
            raise ValueError(
                f"kernel_size must be a tuple whose length is the spatial rank, e.g. (5, 5) for 2-D, "
                f"got {kernel_size!r}."
            )
        sizes = _sequence(
            "kernel_size", kernel_size, "a tuple of positive ints, one per spatial axis, e.g. (5, 5)"
        )
        self.kernel_size = _tuple("kernel_size", sizes, len(sizes))
        n = len(self.kernel_size)
        if n < 1:
            raise ValueError("kernel_size must have at least one spatial dimension.")
        self.strides = _tuple("strides", strides, n)
        self.padding = _padding(padding, n)
        self.kernel_dilation = _tuple("kernel_dilation", kernel_dilation, n)
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision

    def forward(self, x: Array, kernel: Array, bias: Array | None) -> Array:
        """x: (*batch, *spatial, in_features) -> (*batch, *spatial_out, out_features)."""
        n = len(self.kernel_size)
        self._input_check(x, self.in_features, n + 1, f"(*batch, {n} spatial axes, channels)")
        dtype = compute_dtype(x.dtype, kernel.dtype, self.dtype)
        y = conv_channels_last(
            x.astype(dtype),
            kernel.astype(dtype),
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            precision=self.precision,
        )
        return y if bias is None else y + _last_axis(bias.astype(dtype), y.ndim)


class L0Conv(_ConvBase):
    """An N-D convolution (Flax's channels-last layout) with hard-concrete gates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import L0Conv
      >>> conv = L0Conv(1, 20, (5, 5), padding="VALID", structured=True, rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 28, 28, 1))).shape
      (2, 24, 24, 20)

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: window shape, a tuple whose length is the spatial rank (1, 2 or 3).
      strides: an int or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int, one int per axis or (low, high) pairs.
      kernel_dilation: an int or one int per spatial axis.
      structured: one gate per output channel (bias gated too) instead of one per weight.
      use_bias: whether to add a bias.
      gate_config: the gates' hyperparameters (``GateConfig``); default ``GateConfig()``.
      kernel_init: initializer of the ``(*kernel_size, in_features, out_features)`` kernel.
      bias_init: initializer of the ``(out_features,)`` bias.
      dtype: computation dtype.
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the convolution.
      rngs: ``nnx.Rngs`` for initialisation and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        structured: bool = False,
        use_bias: bool = True,
        gate_config: GateConfig | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        config = resolve_gate_config(self, gate_config, gate_keywords)
        self._init_conv(kernel_size, strides, padding, kernel_dilation, dtype, param_dtype, precision)
        self.structured = bool(structured)
        self.granularity = "output" if self.structured else "weight"
        self.feature_group_count = 1
        self.use_bias = use_bias
        kshape = self.kernel_size + (self.in_features, self.out_features)
        self._init_params(
            kshape,
            (self.out_features,),
            (self.out_features,) if self.structured else kshape,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=param_dtype,
            gate_config=config,
            rngs=rngs,
        )

    def kernel_view(self, z: Array) -> Array:
        """``z`` on the output-channel axis when structured, else ``z`` (one gate per weight)."""
        return _last_axis(z, self.kernel.ndim) if self.structured else z

    def bias_view(self, z: Array) -> Array | None:
        """``z`` when structured (a closed channel's bias closes too), None otherwise."""
        return z if self.structured else None


class L0DepthwiseConv(_ConvBase):
    """A depthwise N-D convolution with one hard-concrete gate per input channel.

    Channel c is convolved with its own ``channel_multiplier`` filters, giving output channels
    ``c * channel_multiplier ... (c + 1) * channel_multiplier - 1`` (Flax/XLA grouped-convolution
    order). Its gate switches those filters and their biases, so a closed channel outputs exactly
    zero. (l0-python's ``L0DepthwiseConv2d`` gates the input instead and leaves the bias on, so a
    closed channel still emits its bias; its ``prune_model`` crashes on this layer.)

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import L0DepthwiseConv
      >>> dw = L0DepthwiseConv(8, (3, 3), channel_multiplier=2, rngs=nnx.Rngs(0))
      >>> dw(jnp.ones((2, 16, 16, 8))).shape
      (2, 16, 16, 16)

    Args:
      features: input channels (one gate each).
      kernel_size: window shape, a tuple whose length is the spatial rank.
      channel_multiplier: filters per input channel; outputs ``features * channel_multiplier``.
      strides: an int or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int, one int per axis or (low, high) pairs.
      kernel_dilation: an int or one int per spatial axis.
      use_bias: whether to add a bias.
      gate_config: the gates' hyperparameters (``GateConfig``); default ``GateConfig()``.
      kernel_init: initializer of the ``(*kernel_size, 1, features * channel_multiplier)`` kernel.
      bias_init: initializer of the bias.
      dtype: computation dtype.
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the convolution.
      rngs: ``nnx.Rngs`` for initialisation and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    def __init__(
        self,
        features: int,
        kernel_size: Sequence[int],
        *,
        channel_multiplier: int = 1,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        use_bias: bool = True,
        gate_config: GateConfig | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        self.features = positive_int("features", features)
        self.channel_multiplier = positive_int("channel_multiplier", channel_multiplier)
        self.in_features = self.features
        self.out_features = self.features * self.channel_multiplier
        config = resolve_gate_config(self, gate_config, gate_keywords)
        self._init_conv(kernel_size, strides, padding, kernel_dilation, dtype, param_dtype, precision)
        self.granularity = "channel"
        self.feature_group_count = self.features
        self.use_bias = use_bias
        kshape = self.kernel_size + (1, self.out_features)
        self._init_params(
            kshape,
            (self.out_features,),
            (self.features,),
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=param_dtype,
            gate_config=config,
            rngs=rngs,
        )

    def kernel_view(self, z: Array) -> Array:
        """Each channel's gate repeated over its filters, on the output-channel axis."""
        return _last_axis(self.bias_view(z), self.kernel.ndim)

    def bias_view(self, z: Array) -> Array:
        """Each channel's gate repeated over its outputs: a channel's bias always closes with it."""
        return jnp.repeat(z, self.channel_multiplier, total_repeat_length=self.out_features)


def _is_scalar(value: Any) -> bool:
    """True for one value (a string, a Python or NumPy number, a 0-d NumPy or JAX array)."""
    if isinstance(value, str):
        return True
    try:
        return np.ndim(value) == 0
    except ValueError:  # a ragged list: one entry per layer, not a scalar
        return False


def _per_layer(name: str, value: Any, n: int) -> list:
    if _is_scalar(value):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} must be one value or one per layer ({n}), got {len(values)} values.")
    return values


class SparseMLP(nnx.Module):
    """A multilayer perceptron of ``L0Linear`` layers (l0-python's ``SparseMLP``, any depth).

    ``features=(784, 300, 100, 10)`` with ``gate="input"`` and ``init_keep_prob=(0.8, 0.5, 0.5)``
    is the paper's MLP. Inputs with more than two axes are flattened after the first (batch) axis,
    as l0-python does. The activation runs between layers, not after the last.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import SparseMLP
      >>> mlp = SparseMLP((64, 32, 10), gate="input", rngs=nnx.Rngs(0))
      >>> mlp(jnp.ones((5, 8, 8))).shape
      (5, 10)

    Args:
      features: layer widths, input first: ``(in, hidden..., out)``, at least two entries.
        The default ``(784, 256, 256, 10)`` is l0-python's default ``SparseMLP``.
      gate: granularity of every layer, or one per layer (``"weight"``, ``"input"``, ``"output"``).
      activation: elementwise nonlinearity between layers (must map 0 to 0 for ``compress`` to
        remove units closed by output gates; relu, gelu, tanh, silu do).
      gate_config: the gates' hyperparameters (``GateConfig``), for every layer; default
        ``GateConfig()``. Its ``init_keep_prob``, like the keyword, is one value or one per layer.
      use_bias: whether layers add biases.
      kernel_init: kernel initializer of every layer.
      dtype: computation dtype.
      param_dtype: dtype of the parameters.
      precision: ``jax.lax.Precision`` of the matrix products.
      rngs: ``nnx.Rngs`` for initialisation and gate noise.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig()

    def __init__(
        self,
        features: Sequence[int] = (784, 256, 256, 10),
        *,
        gate: Granularity | Sequence[Granularity] = "weight",
        activation: Callable[[Array], Array] = nnx.relu,
        gate_config: GateConfig | None = None,
        use_bias: bool = True,
        kernel_init: Initializer = default_kernel_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
        **gate_keywords: Unpack[GateKeywords],
    ):
        features = tuple(features)
        if len(features) < 2:
            raise ValueError(f"features must list at least the input and output widths, got {features!r}.")
        n = len(features) - 1
        gates = _per_layer("gate", gate, n)
        # init_keep_prob may be one value per layer, so it is set layer by layer, not in the config.
        keep = gate_keywords.pop("init_keep_prob", None) if "init_keep_prob" in gate_keywords else None
        config = resolve_gate_config(self, gate_config, gate_keywords)
        keeps = _per_layer("init_keep_prob", config.init_keep_prob if keep is None else keep, n)
        self.features = tuple(positive_int("features", f) for f in features)
        check_init_arguments("SparseMLP", rngs, kernel_init=kernel_init, activation=activation)
        self.activation = activation
        self.layers = nnx.List(
            [
                L0Linear(
                    features[i],
                    features[i + 1],
                    gate=gates[i],
                    use_bias=use_bias,
                    gate_config=config.replace(init_keep_prob=keeps[i]),
                    kernel_init=kernel_init,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    precision=precision,
                    rngs=rngs,
                )
                for i in range(n)
            ]
        )

    def __call__(self, x: Array, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """Forward pass.

        Args:
          x: inputs of shape ``(batch, features[0])`` or ``(batch, ...)`` flattening to it.
          deterministic: overrides the gates' mode for this call.
          rngs: ``nnx.Rngs`` or ``RngStream`` for this call's gate noise (a single key would be
            reused by every layer, so it is not accepted here).

        Returns:
          Outputs of shape ``(batch, features[-1])``.
        """
        x = jnp.asarray(x)
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        if isinstance(rngs, jax.Array):
            raise ValueError(
                "SparseMLP needs an nnx.Rngs or RngStream (one key per layer), not a single key."
            )
        for i, layer in enumerate(self.layers):
            x = layer(x, deterministic=deterministic, rngs=rngs)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x

    def l0_chain(self) -> list[L0Layer]:
        """The layers in data-flow order, which ``compress`` uses to remove units across layers."""
        return list(self.layers)
