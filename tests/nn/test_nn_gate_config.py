"""GateConfig: one checked set of gate settings, equal to the keywords it replaces, with keywords on top."""

import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from nn_inputs import normal, np_init

import l0jax.nn as ln
from l0jax.nn import GateConfig

# Every field away from its default, so that a field the config failed to pass on would show.
SETTINGS = dict(
    init_keep_prob=0.7,
    init_jitter=0.1,
    temperature=0.5,
    gamma=-0.2,
    zeta=1.05,
    eval_rule="paper",
    deterministic=False,
    rng_collection="noise",
)
NO_KEEP = {k: v for k, v in SETTINGS.items() if k != "init_keep_prob"}


def _rngs():
    return nnx.Rngs(0, noise=1)


def _arrays(module):
    """Every state leaf of ``module`` by path, as NumPy (PRNG keys as their raw data)."""
    out = {}
    for path, v in nnx.to_flat_state(nnx.state(module)):
        a = v[...]
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        out[path] = np.asarray(a)
    return out


def _assert_identical(a, b):
    """Same structure, same static attributes, bitwise the same arrays and dtypes."""
    assert nnx.graphdef(a) == nnx.graphdef(b)
    xa, xb = _arrays(a), _arrays(b)
    assert xa.keys() == xb.keys()
    for path in xa:
        assert xa[path].dtype == xb[path].dtype, path
        np.testing.assert_array_equal(xa[path], xb[path], err_msg=str(path))


X2 = normal(0, (3, 6))
IMAGES = normal(1, (2, 5, 5, 3))
TOKENS = normal(2, (2, 4, 8))

# (name, builder taking gate arguments, input or None for a gate called without one)
BUILDERS = [
    ("HardConcreteGate", lambda **g: ln.HardConcreteGate((3, 2), rngs=_rngs(), **g), None),
    ("L0Linear", lambda **g: ln.L0Linear(6, 4, gate="input", rngs=_rngs(), **g), X2),
    (
        "L0Conv",
        lambda **g: ln.L0Conv(3, 4, (3, 3), structured=True, kernel_init=np_init, rngs=_rngs(), **g),
        IMAGES,
    ),
    (
        "L0DepthwiseConv",
        lambda **g: ln.L0DepthwiseConv(
            3, (3, 3), channel_multiplier=2, kernel_init=np_init, rngs=_rngs(), **g
        ),
        IMAGES,
    ),
    ("SparseMLP", lambda **g: ln.SparseMLP((6, 5, 2), gate="input", rngs=_rngs(), **g), X2),
    (
        "L0MultiHeadAttention",
        lambda **g: ln.L0MultiHeadAttention(2, 8, dim_gates=True, block_gate=True, rngs=_rngs(), **g),
        TOKENS,
    ),
    ("L0MLPBlock", lambda **g: ln.L0MLPBlock(8, 16, block_gate=True, rngs=_rngs(), **g), TOKENS),
    ("L0Gate", lambda **g: ln.L0Gate(5, rngs=_rngs(), **g), None),
]
DATA_BUILDERS = [
    ("SampleGate", lambda **g: ln.SampleGate(10, 3, rngs=_rngs(), **g)),
    ("FeatureGate", lambda **g: ln.FeatureGate(10, 3, rngs=_rngs(), **g)),
    ("HybridGate", lambda **g: ln.HybridGate(20, 0.5, 0.5, target_items=6, rngs=_rngs(), **g)),
]


def _outputs(module, x):
    """A sampled (training) output, then an eval output; the sample advances the module's stream."""
    call = (lambda **kw: module(**kw)) if x is None else (lambda **kw: module(x, **kw))
    return np.asarray(call()), np.asarray(call(deterministic=True))


@pytest.mark.parametrize("name, build, x", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_a_module_built_from_a_config_is_the_one_built_from_keywords(name, build, x):
    by_keywords = build(**SETTINGS)
    by_config = build(gate_config=GateConfig(**SETTINGS))
    _assert_identical(by_keywords, by_config)
    for a, b in zip(_outputs(by_keywords, x), _outputs(by_config, x), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    _assert_identical(by_keywords, by_config)  # the noise streams advanced alike
    gates = [m for _, m in nnx.iter_modules(by_config) if isinstance(m, ln.HardConcreteGate)]
    assert gates and all(
        (g.gamma, g.zeta, g.eval_rule, g.rng_collection) == (-0.2, 1.05, "paper", "noise")
        and float(g.temperature[...]) == np.float32(0.5)
        for g in gates
    )


@pytest.mark.parametrize("name, build", DATA_BUILDERS, ids=[b[0] for b in DATA_BUILDERS])
def test_data_gates_built_from_a_config_equal_those_built_from_keywords(name, build):
    by_keywords, by_config = build(**NO_KEEP), build(gate_config=GateConfig(**NO_KEEP))
    _assert_identical(by_keywords, by_config)
    gate = by_config.l0_gate if name == "HybridGate" else by_config
    assert (gate.gamma, gate.zeta, gate.eval_rule, gate.rng_collection) == (-0.2, 1.05, "paper", "noise")
    # They set the initial keep probability from their targets, whatever the config says.
    _assert_identical(by_keywords, build(gate_config=GateConfig(**SETTINGS)))
    with pytest.raises(TypeError, match=f"{name} sets init_keep_prob itself"):
        build(init_keep_prob=0.5)


def test_keywords_override_the_config_and_a_config_replaces_the_class_defaults():
    config = GateConfig(init_keep_prob=0.8, temperature=0.5, eval_rule="paper")
    layer = ln.L0Linear(3, 2, gate_config=config, temperature=0.25, rngs=nnx.Rngs(0))
    assert float(layer.gate.temperature[...]) == 0.25  # the keyword wins
    assert layer.gate.eval_rule == "paper"  # the other fields come from the config
    np.testing.assert_allclose(layer.gate.log_alpha[...], np.log(0.8 / 0.2), rtol=1e-6)
    assert config.temperature == 0.5  # the config itself is unchanged
    # Without a config each class keeps its own defaults (l0-python's temperatures for data gates);
    # with one, the config's fields apply in full.
    assert float(ln.L0Gate(3).temperature[...]) == 0.5
    assert float(ln.FeatureGate(5, 2).temperature[...]) == np.float32(0.1)
    assert float(ln.L0Gate(3, gate_config=GateConfig()).temperature[...]) == np.float32(2 / 3)
    assert ln.L0MLPBlock(4, 6, rngs=nnx.Rngs(0)).hidden_gate.log_alpha[...][0] == np.float32(np.log(9.0))
    assert (
        ln.L0MLPBlock(4, 6, gate_config=GateConfig(), rngs=nnx.Rngs(0)).hidden_gate.log_alpha[...][0] == 0.0
    )


def test_sparse_mlp_takes_init_keep_prob_per_layer_from_the_keyword_or_the_config():
    keeps = (0.8, 0.5, 0.6)
    by_keyword = ln.SparseMLP((6, 5, 4, 2), gate="input", init_keep_prob=keeps, rngs=nnx.Rngs(0))
    by_config = ln.SparseMLP(
        (6, 5, 4, 2), gate="input", gate_config=GateConfig(init_keep_prob=keeps), rngs=nnx.Rngs(0)
    )
    _assert_identical(by_keyword, by_config)
    for layer, keep in zip(by_config.layers, keeps, strict=True):
        np.testing.assert_allclose(layer.gate.log_alpha[...], np.log(keep / (1 - keep)), rtol=1e-6)


def test_the_config_is_frozen_comparable_and_hashable():
    config = GateConfig(init_keep_prob=np.array([0.2, 0.3]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.temperature = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        config.init_keep_prob[0] = 0.9  # an array it holds cannot be changed behind its back
    same = GateConfig(init_keep_prob=[0.2, 0.3])
    assert config == same and hash(config) == hash(same)
    assert config != GateConfig(init_keep_prob=[0.2, 0.4])
    assert GateConfig(temperature=0.5) == GateConfig().replace(temperature=0.5)
    assert GateConfig() != GateConfig(rng_collection="noise")
    gate = GateConfig(temperature=0.25, deterministic=True).build((2, 3), param_dtype=jnp.bfloat16)
    assert gate.shape == (2, 3) and gate.log_alpha[...].dtype == jnp.bfloat16
    assert gate.deterministic is True and float(gate.temperature[...]) == 0.25


@pytest.mark.parametrize(
    "fields, error, match",
    [
        ({"init_keep_prob": 1.0}, ValueError, "init_keep_prob must lie strictly between 0 and 1"),
        ({"init_keep_prob": [0.5, 0.0]}, ValueError, "init_keep_prob"),
        ({"init_jitter": -0.1}, ValueError, "init_jitter must be >= 0"),
        ({"init_jitter": [0.1, 0.2]}, ValueError, "init_jitter must be a single number"),
        ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ({"temperature": "hot"}, ValueError, "temperature must be a real number"),
        ({"gamma": 0.1}, ValueError, "gamma must be < 0"),
        ({"zeta": 0.9}, ValueError, "zeta must be > 1"),
        ({"gamma": [-0.1, -0.2]}, ValueError, "gamma must be a single number"),
        ({"eval_rule": "mean"}, ValueError, "unknown eval_rule 'mean'; choose one of 'median', 'paper'"),
        ({"deterministic": "yes"}, TypeError, "deterministic must be True .*, False .* or None"),
        ({"rng_collection": 3}, TypeError, "rng_collection must be the name of an nnx.Rngs stream"),
    ],
)
def test_bad_config_fields_raise_errors_naming_the_field(fields, error, match):
    with pytest.raises(error, match=match):
        GateConfig(**fields)
    with pytest.raises(error, match=match):  # the same check, whether the field comes by keyword
        ln.L0Linear(3, 2, rngs=nnx.Rngs(0), **fields)


def test_a_wrong_config_or_an_unknown_gate_keyword_is_named():
    with pytest.raises(TypeError, match="gate_config of L0Linear must be an l0jax.nn.GateConfig"):
        ln.L0Linear(3, 2, gate_config={"temperature": 0.5}, rngs=nnx.Rngs(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="L0Conv got unexpected keyword argument\\(s\\) temprature"):
        ln.L0Conv(3, 2, (3,), temprature=0.5, rngs=nnx.Rngs(0))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="SampleGate sets init_keep_prob itself"):
        ln.SampleGate(10, 3, init_keep_prob=0.5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ln.L0Conv(2, 2, (3, 3), strides=True, rngs=nnx.Rngs(0)), "strides must be a positive int"),
        (lambda: ln.L0Conv(2, 2, (3, 3), kernel_dilation=2.0, rngs=nnx.Rngs(0)), "kernel_dilation must be"),
        (lambda: ln.L0Conv(2, 2, True, rngs=nnx.Rngs(0)), "kernel_size must be a tuple of positive ints"),
        (lambda: ln.L0Conv(2, 2, None, rngs=nnx.Rngs(0)), "kernel_size must be a tuple"),
        (lambda: ln.L0Conv(2, 2, (3, 3), padding=None, rngs=nnx.Rngs(0)), "padding must be 'SAME', 'VALID'"),
        (lambda: ln.L0Conv(2, 2, (3, 3), padding=True, rngs=nnx.Rngs(0)), "padding must be 'SAME', 'VALID'"),
        (lambda: ln.L0DepthwiseConv(2, (3,), padding=1.5, rngs=nnx.Rngs(0)), "padding must be"),
        (lambda: ln.L0Linear(2, 2, rngs=None), "rngs of L0Linear must be an nnx.Rngs"),
        (
            lambda: ln.L0Linear(2, 2, kernel_init=0.1, rngs=nnx.Rngs(0)),
            "kernel_init of L0Linear must be callable",
        ),
        (
            lambda: ln.SparseMLP((3, 2), activation="relu", rngs=nnx.Rngs(0)),
            "activation of SparseMLP must be",
        ),
        (lambda: ln.L0MLPBlock(3, 4, bias_init=None, rngs=nnx.Rngs(0)), "bias_init of L0MLPBlock must be"),
        (lambda: ln.L0MultiHeadAttention(2, 4, rngs=jax.random.key(0)), "rngs of L0MultiHeadAttention"),
    ],
)
def test_wrong_argument_types_raise_type_errors_naming_the_argument(build, match):
    with pytest.raises(TypeError, match=re.escape(match) if "'" in match else match):
        build()


def test_the_earlier_subclass_protocol_still_works_with_a_deprecation_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class OldScale(ln.L0Layer):
            def __init__(self, n, rngs):
                self.kernel = nnx.Param(jnp.linspace(1.0, 2.0, n, dtype=jnp.float32))
                self.bias = nnx.data(None)
                self.gate = ln.HardConcreteGate((n,), rngs=rngs)
                self.granularity = "weight"

            def _kernel_view(self, z):
                return z

            def _bias_view(self, z):
                return None

            def _apply(self, x, kernel, bias):
                return x * kernel

    messages = sorted(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
    assert messages == [
        "OldScale._apply is the old name of L0Layer.forward: rename the method to forward.",
        "OldScale._bias_view is the old name of L0Layer.bias_view: rename the method to bias_view.",
        "OldScale._kernel_view is the old name of L0Layer.kernel_view: rename the method to kernel_view.",
    ]
    layer = OldScale(3, nnx.Rngs(0))
    layer.gate.log_alpha[...] = jnp.array([3.0, -6.0, 3.0], jnp.float32)
    np.testing.assert_array_equal(layer.kernel_view(jnp.arange(3.0)), [0.0, 1.0, 2.0])
    kernel = np.asarray(layer.kernel[...])
    np.testing.assert_allclose(layer(jnp.ones(3), deterministic=True), kernel * [1.0, 0.0, 1.0])
    ln.prune(layer, 0.05)
    np.testing.assert_array_equal(layer.kernel[...], kernel * np.array([1, 0, 1], np.float32))


def test_l0_python_aliases_are_the_native_methods():
    gate = ln.L0Gate(4, deterministic=True)
    gate.log_alpha[...] = jnp.array([2.0, -3.0, 0.5, -0.2])
    x = normal(3, (2, 4))
    np.testing.assert_array_equal(gate.get_gates(), gate())
    np.testing.assert_array_equal(gate.apply_gates(x, 1), gate.apply(x, 1))
    np.testing.assert_array_equal(gate.get_penalty(), gate.penalty())
    np.testing.assert_array_equal(gate.get_active_indices(0.3), gate.active_indices(0.3))
    features = ln.FeatureGate(4, 2)
    np.testing.assert_array_equal(features.get_feature_importance(), features.feature_importance())
    hybrid = ln.HybridGate(8, 0.5, 0.5, target_items=4)
    np.testing.assert_array_equal(hybrid.get_penalty(), hybrid.penalty())
    # The aliases live apart from the native API, and only where l0-python had them.
    assert "get_gates" not in vars(ln.L0Gate) and "get_penalty" not in vars(ln.HybridGate)
    assert not hasattr(hybrid, "get_gates") and not hasattr(gate, "get_feature_importance")
