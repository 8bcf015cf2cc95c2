"""The hard-concrete gate as a Flax NNX module (Louizos, Welling & Kingma 2018, section 2.2).

A gate owns one trainable array, ``log_alpha`` (an ``nnx.Param``), and one non-trainable scalar,
the concrete temperature (a ``Temperature`` variable, which ``nnx.Optimizer(..., wrt=nnx.Param)``
leaves out and which is state, not a constant, so changing it never recompiles a jitted step).
Train and eval follow ``nnx.Dropout``: a ``deterministic`` flag set at construction, per call,
by ``model.train()``/``model.eval()`` or by ``nnx.view(model, deterministic=...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypedDict, Unpack, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import rnglib
from flax.typing import Dtype
from jax.core import Tracer
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule

Array = jax.Array
Shape = tuple[int, ...]
RngsLike = nnx.Rngs | rnglib.RngStream | jax.Array | None


# Compiled once per gate shape: called eagerly (selections, statistics) the pure core would
# otherwise dispatch, and compile, each of its small operations separately. Under an outer jit
# these simply inline.
_sample = jax.jit(hc.hard_concrete, static_argnames=("gamma", "zeta"))
_eval = jax.jit(hc.hard_concrete_eval, static_argnames=("gamma", "zeta", "rule"))
_prob_nonzero = jax.jit(hc.prob_nonzero, static_argnames=("gamma", "zeta"))
compiled_l0_penalty = jax.jit(hc.l0_penalty, static_argnames=("gamma", "zeta", "group_size"))


class Temperature(nnx.Variable):
    """The concrete temperature of a gate: a float32 scalar that is state but not a parameter.

    Being an ``nnx.Variable`` (not an ``nnx.Param``) it is excluded from gradients and from
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; being state (not a Python float) it can change
    between calls of a jitted step without recompiling it. Set it with
    ``l0jax.nn.set_temperature(model, t)``.
    """


def canonical_shape(name: str, shape: Any) -> Shape:
    """Returns ``shape`` as a tuple of positive ints, raising ValueError naming ``name`` otherwise."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(cast(Any, shape))  # a bool or other non-iterable raises TypeError, named below
    except TypeError:
        raise ValueError(f"{name} must be an int or a tuple of ints, got {shape!r}.") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"{name} must contain positive integers (no empty gates), got {shape!r}.")
    return tuple(int(d) for d in dims)


def key_from(rngs: Any, collection: str, owner: str) -> Array:
    """Draws one key from ``rngs`` (an ``nnx.Rngs``, an ``nnx.RngStream`` or a key array)."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection]()
    if isinstance(rngs, rnglib.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(
        f"rngs of {owner} must be an nnx.Rngs, an nnx.RngStream or a key array, got {type(rngs)}."
    )


def _fork(rngs: Any, collection: str, owner: str) -> Any:
    if rngs is None:
        return nnx.data(None)
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection].fork()
    if isinstance(rngs, rnglib.RngStream):
        return rngs.fork()
    raise TypeError(f"rngs of {owner} must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs)}.")


def _number(name: str, value: Any, *, scalar: bool) -> Any:
    """``value`` as a float, or as a read-only float64 array when it may be one (the config is frozen).

    The gates convert to float64 (and then to their dtype) anyway, so this loses nothing. A traced
    value is kept as it is, since its contents are unknown until the trace runs.
    """
    if isinstance(value, Tracer):
        return value
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        return float(arr)
    if scalar:
        raise ValueError(f"{name} must be a single number, got an array of shape {arr.shape}.")
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class GateConfig:
    """The hyperparameters of hard-concrete gates, checked once and shared by any number of modules.

    Every gate, L0 layer, data gate and structured block accepts ``gate_config=`` and each field as
    a keyword argument. A keyword given explicitly overrides the field of the same name; the
    fields not given by keyword come from ``gate_config``, or, without one, from the class's own
    defaults, ``cls.gate_defaults`` (``GateConfig()`` for the layers;
    ``temperature=0.5``, ``0.25``, ``0.1`` for ``L0Gate``, ``SampleGate``/``HybridGate`` and
    ``FeatureGate``, as in l0-python; ``init_keep_prob=0.9`` for the attention and MLP blocks).
    A ``gate_config`` replaces those class defaults as a whole. The data gates that derive the
    initial keep probability from their targets (``SampleGate``, ``FeatureGate``, ``HybridGate``)
    set ``init_keep_prob`` themselves. The dtype of the gate logits is not a gate setting but the
    owning module's ``param_dtype``.

    Example:
      >>> from flax import nnx
      >>> from l0jax.nn import GateConfig, L0Linear
      >>> config = GateConfig(init_keep_prob=0.8, temperature=0.5)
      >>> layer = L0Linear(4, 3, gate_config=config, rngs=nnx.Rngs(0))
      >>> float(layer.gate.temperature[...])
      0.5
      >>> float(L0Linear(4, 3, gate_config=config, temperature=0.4, rngs=nnx.Rngs(0)).gate.temperature[...])
      0.4000000059604645
      >>> gate = config.build((3,), rngs=nnx.Rngs(0))   # a HardConcreteGate with these settings
      >>> gate.shape
      (3,)

    Args:
      init_keep_prob: initial probability that a gate is kept, in (0, 1): a scalar or an array
        broadcastable to the gate shape (l0-python's ``init_mean``, or ``1 - init_sparsity``).
        ``log_alpha`` starts at its logit.
      init_jitter: standard deviation of Gaussian noise added to the initial ``log_alpha`` (the
        paper's code uses 0.01); > 0 needs ``rngs`` and breaks the symmetry between gates.
      temperature: the concrete temperature > 0 (the paper's beta; 2/3 in the paper).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      eval_rule: ``"median"`` (default: the gate at the noise median, consistent with the
        temperature) or ``"paper"`` (eq. 13), the deterministic gate of eval mode.
      deterministic: default mode; ``False`` samples (needs a key), ``True`` evaluates, ``None``
        requires the mode at each call (or from ``nnx.view`` / ``model.eval()``).
      rng_collection: name of the ``nnx.Rngs`` stream the gates draw their noise from.

    Raises:
      ValueError: a field out of range or of the wrong shape, named in the message.
      TypeError: ``deterministic`` not a bool or None, ``rng_collection`` not a string.
    """

    init_keep_prob: ArrayLike = 0.5
    init_jitter: float = 0.0
    temperature: ArrayLike = 2 / 3
    gamma: float = hc.GAMMA
    zeta: float = hc.ZETA
    eval_rule: EvalRule = "median"
    deterministic: bool | None = False
    rng_collection: str = "gates"

    def __post_init__(self) -> None:
        checks.check_open_unit("init_keep_prob", self.init_keep_prob)
        checks.check_nonnegative("init_jitter", self.init_jitter)
        checks.check_positive(
            "temperature", self.temperature, hint="It is the concrete temperature, e.g. 2/3."
        )
        checks.check_stretch(self.gamma, self.zeta)
        checks.check_choice("eval_rule", self.eval_rule, hc.EVAL_RULES)
        if self.deterministic is not None and not isinstance(self.deterministic, (bool, np.bool_)):
            raise TypeError(
                f"deterministic must be True (eval: deterministic gates), False (training: sampled "
                f"gates) or None (mode given at each call), got {self.deterministic!r}."
            )
        if not isinstance(self.rng_collection, str):
            raise TypeError(
                f"rng_collection must be the name of an nnx.Rngs stream (a string such as 'gates'), "
                f"got {self.rng_collection!r}."
            )
        # Normalised so that the frozen config cannot be changed through an array it holds.
        object.__setattr__(
            self, "init_keep_prob", _number("init_keep_prob", self.init_keep_prob, scalar=False)
        )
        object.__setattr__(self, "temperature", _number("temperature", self.temperature, scalar=False))
        for name in ("init_jitter", "gamma", "zeta"):
            object.__setattr__(self, name, _number(name, getattr(self, name), scalar=True))

    def _key(self) -> tuple:
        def hashable(v: Any) -> Any:
            return (v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v

        return tuple(hashable(getattr(self, name)) for name in GATE_FIELDS)

    def __eq__(self, other: object) -> bool:
        """Field-by-field equality (arrays compared by shape and contents)."""
        if not isinstance(other, GateConfig):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        """A hash consistent with ``==``, so configs can be dict keys or static arguments."""
        return hash(self._key())

    def replace(self, **changes: Any) -> GateConfig:
        """A copy with some fields changed (checked like a new config).

        Args:
          **changes: field names and their new values.

        Returns:
          A new ``GateConfig``.
        """
        return dataclasses.replace(self, **changes)

    def build(
        self,
        shape: int | Shape,
        *,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
    ) -> HardConcreteGate:
        """A ``HardConcreteGate`` of ``shape`` with these settings.

        Args:
          shape: shape of the gate array (an int or a tuple of positive ints).
          param_dtype: dtype of ``log_alpha``.
          rngs: as for ``HardConcreteGate``.

        Returns:
          The gate.
        """
        return HardConcreteGate(shape, gate_config=self, param_dtype=param_dtype, rngs=rngs)


GATE_FIELDS = tuple(field.name for field in dataclasses.fields(GateConfig))


class GateKeywordsWithoutKeep(TypedDict, total=False):
    """The fields of ``GateConfig`` but ``init_keep_prob``, as keyword arguments of a module.

    The data gates that derive the initial keep probability from their targets take these.
    """

    init_jitter: float
    temperature: ArrayLike
    gamma: float
    zeta: float
    eval_rule: EvalRule
    deterministic: bool | None
    rng_collection: str


class GateKeywords(GateKeywordsWithoutKeep, total=False):
    """The fields of ``GateConfig`` as keyword arguments of a module (each overrides ``gate_config``'s)."""

    init_keep_prob: ArrayLike


def resolve_gate_config(
    module: Any, gate_config: GateConfig | None, keywords: Mapping[str, Any], **derived: Any
) -> GateConfig:
    """The configuration ``module`` uses: ``gate_config`` (or its class's ``gate_defaults``) with the
    gate keywords its constructor was given.

    Args:
      module: the module being built (its class names errors and holds ``gate_defaults``).
      gate_config: the user's configuration, or None.
      keywords: the gate keywords given to the constructor.
      **derived: fields the module sets itself (``init_keep_prob`` of the data gates): applied
        last, and an error when also given by keyword.

    Returns:
      The checked configuration.
    """
    owner = type(module).__name__
    unknown = sorted(set(keywords) - set(GATE_FIELDS))
    if unknown:
        raise TypeError(
            f"{owner} got unexpected keyword argument(s) {', '.join(unknown)}; its gate settings are "
            f"the fields of GateConfig: {', '.join(GATE_FIELDS)}."
        )
    clash = sorted(set(keywords) & set(derived))
    if clash:
        raise TypeError(f"{owner} sets {clash[0]} itself (from its target): leave {clash[0]} out.")
    if gate_config is not None and not isinstance(gate_config, GateConfig):
        raise TypeError(
            f"gate_config of {owner} must be an l0jax.nn.GateConfig (e.g. GateConfig(temperature=0.5)) "
            f"or None, got {type(gate_config).__name__}."
        )
    config: GateConfig = type(module).gate_defaults if gate_config is None else gate_config
    changes = {**keywords, **derived}
    return config.replace(**changes) if changes else config


class HardConcreteGate(nnx.Module):
    """A block of hard-concrete gates z in [0, 1] with trainable locations log_alpha.

    In training mode (``deterministic=False``) a call samples z by the reparameterisation of
    eqs. 9-10, differentiable in ``log_alpha``; in eval mode it returns the deterministic
    test-time gates of ``eval_rule`` (``"median"``: the gate at the noise median, consistent with
    the temperature; ``"paper"``: eq. 13). ``penalty()`` is the expected number of open gates
    (eq. 12).

    Example:
      >>> from flax import nnx
      >>> from l0jax.nn import HardConcreteGate
      >>> gate = HardConcreteGate((3,), init_keep_prob=0.9, rngs=nnx.Rngs(0))
      >>> z = gate()                          # sampled, shape (3,)
      >>> z_eval = gate(deterministic=True)   # deterministic
      >>> float(gate.penalty()) > 2.7         # expected open gates, about 3 x 0.92
      True

    Args:
      shape: shape of the gate array (an int or a tuple of positive ints).
      gate_config: the gate hyperparameters (``GateConfig``); default ``GateConfig()``.
      param_dtype: dtype of ``log_alpha``.
      rngs: an ``nnx.Rngs`` (or ``RngStream``): the ``params`` stream draws the jitter and a fork
        of ``rng_collection`` is kept for sampling. May be None when ``init_jitter == 0`` and
        keys are passed at call time.
      **gate_keywords: any field of ``GateConfig`` (``init_keep_prob``, ``init_jitter``,
        ``temperature``, ``gamma``, ``zeta``, ``eval_rule``, ``deterministic``,
        ``rng_collection``), overriding the field of ``gate_config``.
    """

    gate_defaults: ClassVar[GateConfig] = GateConfig()

    def __init__(
        self,
        shape: int | Shape,
        *,
        gate_config: GateConfig | None = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs | rnglib.RngStream | None = None,
        **gate_keywords: Unpack[GateKeywords],
    ):
        config = resolve_gate_config(self, gate_config, gate_keywords)
        shape = canonical_shape("shape", shape)
        keep = np.asarray(config.init_keep_prob, dtype=np.float64)
        try:
            keep = np.broadcast_to(keep, shape)
        except ValueError:
            raise ValueError(
                f"init_keep_prob of shape {keep.shape} must broadcast to the gate shape {shape}."
            ) from None
        log_alpha = jnp.asarray(hc.logit_np(keep), param_dtype)
        if config.init_jitter > 0:
            if rngs is None:
                raise ValueError(
                    "init_jitter > 0 draws noise, so rngs is needed: pass rngs=nnx.Rngs(seed) "
                    "(or set init_jitter=0)."
                )
            key = key_from(rngs, "params", type(self).__name__)
            log_alpha = log_alpha + jnp.asarray(config.init_jitter, param_dtype) * jax.random.normal(
                key, shape, param_dtype
            )
        self.shape = shape
        self.log_alpha = nnx.Param(log_alpha)
        self.temperature = Temperature(jnp.asarray(config.temperature, jnp.float32))
        self.gamma = float(config.gamma)
        self.zeta = float(config.zeta)
        self.eval_rule = config.eval_rule
        self.deterministic = config.deterministic
        self.rng_collection = config.rng_collection
        self.rngs = _fork(rngs, config.rng_collection, type(self).__name__)

    def _is_deterministic(self, deterministic: bool | None) -> bool:
        if deterministic is not None:
            return deterministic
        if self.deterministic is not None:
            return self.deterministic
        raise ValueError(
            f"No `deterministic` argument was given to {type(self).__name__}. Pass "
            f"deterministic=True/False to the constructor or to the call, or make a view of the "
            f"model with nnx.view(model, deterministic=True/False) (or call model.eval()/train())."
        )

    def __call__(self, *, deterministic: bool | None = None, rngs: RngsLike = None) -> Array:
        """Returns the gates: sampled in training mode, deterministic in eval mode.

        Args:
          deterministic: overrides the module's mode for this call.
          rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key for this call's noise; overrides the
            stream kept at construction.

        Returns:
          Gates in [0, 1] of shape ``self.shape`` and the dtype of ``log_alpha``.
        """
        if self._is_deterministic(deterministic):
            return self.eval_gates()
        rngs = rngs if rngs is not None else self.rngs
        if rngs is None:
            raise ValueError(
                f"{type(self).__name__} is in training mode (deterministic=False), so it samples "
                f"gates and needs a key, but none was given: build it with rngs=nnx.Rngs(seed), or "
                f"pass rngs=... to the call, or evaluate with deterministic=True / nnx.view(model, "
                f"deterministic=True)."
            )
        key = key_from(rngs, self.rng_collection, type(self).__name__)
        return _sample(key, self.log_alpha[...], self.temperature[...], gamma=self.gamma, zeta=self.zeta)

    def eval_gates(self) -> Array:
        """The deterministic gates of ``eval_rule``, shape ``self.shape``, whatever the mode."""
        return _eval(
            self.log_alpha[...], self.temperature[...], gamma=self.gamma, zeta=self.zeta, rule=self.eval_rule
        )

    def prob_nonzero(self) -> Array:
        """P(z != 0) of each gate (eq. 12), shape ``self.shape``."""
        return _prob_nonzero(self.log_alpha[...], self.temperature[...], gamma=self.gamma, zeta=self.zeta)

    def penalty(self) -> Array:
        """Expected number of open gates, ``sum P(z != 0)`` (eq. 12): a float32 scalar."""
        return compiled_l0_penalty(
            self.log_alpha[...], self.temperature[...], gamma=self.gamma, zeta=self.zeta
        )

    def active(self, threshold: float = 0.5) -> Array:
        """Boolean mask of the gates with ``P(z != 0) > threshold``, shape ``self.shape``.

        Args:
          threshold: probability in [0, 1).
        """
        checks.check_threshold(threshold)
        return self.prob_nonzero() > threshold

    def set_view(self, deterministic: bool | None = None, eval_rule: EvalRule | None = None) -> None:
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, gates are deterministic (eval mode); if False, sampled.
          eval_rule: ``"median"`` or ``"paper"``, the deterministic rule.
        """
        if deterministic is not None:
            self.deterministic = deterministic
        if eval_rule is not None:
            checks.check_choice("eval_rule", eval_rule, hc.EVAL_RULES)
            self.eval_rule = eval_rule
