"""Properties of the Flax NNX layers and gates (l0jax.nn), prune and compress.

Layer sizes come from a small fixed set (one compiled program each); inputs, dtypes, NaN/inf and
the constructors' arguments are drawn.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from l0jax import nn as l0nn
from tests.properties.support import ALL_DTYPES, WRONG_TYPES, arrays, cast, must_fail, outcome

SIZES = st.one_of(st.integers(-1, 5), st.sampled_from([2.0, "3", None, True]))
KEEP = st.one_of(st.sampled_from([0.5, 0.01, 0.99, 0.0, 1.0, -0.2, np.nan, np.inf]), WRONG_TYPES)
TEMPERATURE = st.one_of(st.sampled_from([2 / 3, 0.1, 0.0, -1.0, np.nan]), WRONG_TYPES)


def _is_size(v, minimum=1):
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_keep(v):
    return isinstance(v, float) and 0 < v < 1


def _is_temperature(v):
    return isinstance(v, float) and np.isfinite(v) and v > 0


@given(
    n_in=SIZES,
    n_out=SIZES,
    gate=st.sampled_from(["weight", "input", "output", "neuron", None]),
    keep=KEEP,
    temperature=TEMPERATURE,
)
def test_l0_linear_builds_the_shapes_asked_or_names_the_argument(n_in, n_out, gate, keep, temperature):
    layer = outcome(
        lambda: l0nn.L0Linear(
            n_in, n_out, gate=gate, init_keep_prob=keep, temperature=temperature, rngs=nnx.Rngs(0)
        ),
        ["in_features", "out_features", "gate", "init_keep_prob", "temperature"],
    )
    valid = (
        _is_size(n_in)
        and _is_size(n_out)
        and gate in ("weight", "input", "output")
        and _is_keep(keep)
        and _is_temperature(temperature)
    )
    assert (layer is not None) == valid
    if valid:
        assert layer.kernel.shape == (n_in, n_out)
        want = {"weight": (n_in, n_out), "input": (n_in,), "output": (n_out,)}[gate]
        assert layer.gate.shape == want
        # Every gate starts at logit(keep): P(z != 0) is the closed form of eq. 12 there.
        la = np.asarray(layer.gate.log_alpha[...], np.float64)
        np.testing.assert_allclose(la, np.log(keep / (1 - keep)), rtol=1e-5, atol=1e-6)


_LAYER = l0nn.L0Linear(4, 3, gate="weight", rngs=nnx.Rngs(0))
_LAYER.gate.log_alpha[...] = jnp.asarray(np.linspace(-4, 4, 12).reshape(4, 3), jnp.float32)
_EVAL = nnx.jit(lambda m, x: m(x, deterministic=True))


def _reference(x):
    g = _LAYER.gate
    la = np.asarray(g.log_alpha[...], np.float64)
    z = np.clip(1 / (1 + np.exp(-la / float(g.temperature[...]))) * (g.zeta - g.gamma) + g.gamma, 0, 1)
    k, b = np.asarray(_LAYER.kernel[...], np.float64), np.asarray(_LAYER.bias[...], np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return x @ (k * z) + b


@given(
    shape=st.sampled_from([(4,), (1, 4), (2, 4), (3, 2, 4), (0, 4), (2, 5), (4, 1), ()]),
    dtype=st.sampled_from(ALL_DTYPES),
    data=st.data(),
)
def test_l0_linear_eval_output_is_x_times_the_gated_kernel(shape, dtype, data):
    values = data.draw(arrays(shape, elements=st.sampled_from([0.0, 1e-30, 0.5, -1.0, 3.0, 1e3, -1e4])))
    x = cast(values, dtype)
    real = np.dtype(dtype).kind in "biuf" or np.dtype(dtype) == np.dtype("bfloat16")
    valid = real and len(shape) >= 1 and shape[-1] == 4
    out = outcome(lambda: _EVAL(_LAYER, jnp.asarray(x) if real else x), ["x", "in_features"])
    assert (out is not None) == valid
    if valid:
        assert out.shape == (*shape[:-1], 3)
        exact = x.astype(np.float64)
        expected = _reference(np.asarray(jnp.asarray(x).astype(out.dtype), np.float64))
        tol = {2: 1e-2, 4: 1e-5}.get(np.dtype(out.dtype).itemsize, 1e-5)
        np.testing.assert_allclose(
            np.asarray(out, np.float64),
            expected,
            rtol=tol,
            atol=tol * (1 + np.nanmax(np.abs(exact), initial=0)),
        )


@given(
    shape=st.one_of(st.sampled_from([3, (2, 3), (1,), (0,)]), st.sampled_from([-1, (2, -1), "3", None, 2.5])),
    keep=KEEP,
    deterministic=st.booleans(),
)
def test_hard_concrete_gate_module_gives_gates_in_the_unit_interval(shape, keep, deterministic):
    gate = outcome(
        lambda: l0nn.HardConcreteGate(shape, init_keep_prob=keep, rngs=nnx.Rngs(0)),
        ["shape", "init_keep_prob"],
    )
    # A block of zero gates is refused (naming shape): there would be nothing to gate.
    shape_ok = _is_size(shape, 1) or (isinstance(shape, tuple) and all(_is_size(d, 1) for d in shape))
    assert (gate is not None) == (shape_ok and _is_keep(keep))
    if gate is None:
        return
    z = np.asarray(gate(deterministic=deterministic, rngs=nnx.Rngs(gates=1)))
    assert z.shape == ((shape,) if isinstance(shape, int) else shape)
    assert np.all((z >= 0) & (z <= 1))


@given(
    features=st.sampled_from([(5, 4, 3), (5, 3)]),
    gate=st.sampled_from(["input", "output", "weight"]),
    seed=st.integers(0, 2**16),
    threshold=st.one_of(st.sampled_from([0.05, 0.0, 0.5, 0.999, 1.0, -0.1, np.nan]), WRONG_TYPES),
)
def test_compress_keeps_eval_outputs_and_prune_zeroes_only_closed_gates(features, gate, seed, threshold):
    model = l0nn.SparseMLP(features, gate=gate, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(seed)
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, l0nn.L0Layer):
            layer.gate.log_alpha[...] = jnp.asarray(rng.uniform(-6, 6, layer.gate.shape), jnp.float32)
    x = jnp.asarray(rng.normal(size=(7, features[0])), jnp.float32)
    before = np.asarray(model(x, deterministic=True))
    small = l0nn.compress(model)
    np.testing.assert_allclose(np.asarray(small(x)), before, rtol=1e-5, atol=1e-5)
    count = l0nn.active_parameter_count(model)
    pruned = outcome(lambda: l0nn.prune(model, threshold), ["threshold"])
    valid = isinstance(threshold, float) and 0 <= threshold < 1
    assert (pruned is not None) == valid
    if valid:
        assert l0nn.active_parameter_count(model) <= count
        if threshold <= 0.5:  # the median rule already closes every gate with P(z != 0) <= 0.5
            np.testing.assert_allclose(np.asarray(model(x, deterministic=True)), before, rtol=1e-5, atol=1e-5)


@given(
    n=st.one_of(st.integers(-1, 6), st.sampled_from([2.0, None])),
    k=st.one_of(st.integers(-1, 7), st.sampled_from([1.5, "2"])),
    x_cols=st.sampled_from([6, 5]),
)
def test_feature_gate_selects_at_most_the_features_it_has(n, k, x_cols):
    gate = outcome(lambda: l0nn.FeatureGate(n, k, rngs=nnx.Rngs(0)), ["n_features", "max_features"])
    valid = _is_size(n) and _is_size(k)  # a cap above n_features is no cap (documented)
    if not valid:
        assert gate is None
        return
    assert gate is not None
    x = jnp.ones((3, x_cols), jnp.float32)
    out = outcome(lambda: gate.select_features(x, deterministic=True), ["data", "n_features"])
    assert (out is not None) == (x_cols == n)
    if out is not None:
        selected = out[0] if isinstance(out, tuple) else out
        assert selected.shape[0] == 3 and selected.shape[1] <= n


@given(
    n=st.one_of(st.integers(-1, 6), st.sampled_from([2.0, None])),
    k=st.one_of(st.integers(-1, 7), st.sampled_from([1.5, "2"])),
)
def test_sample_gate_and_l0_gate_check_their_sizes(n, k):
    gate = outcome(lambda: l0nn.SampleGate(n, k, rngs=nnx.Rngs(0)), ["n_samples", "target_samples"])
    assert (gate is not None) == (_is_size(n) and _is_size(k) and k <= n)
    gate = outcome(lambda: l0nn.L0Gate(n, rngs=nnx.Rngs(0)), ["size"])
    assert (gate is not None) == _is_size(n)
    if gate is not None:
        z = np.asarray(gate.get_gates(deterministic=True))
        assert z.shape == (n,) and np.all((z >= 0) & (z <= 1))


def test_model_utilities_name_a_model_without_gates():
    for call in (
        lambda: l0nn.prune(nnx.Linear(2, 2, rngs=nnx.Rngs(0))),
        lambda: l0nn.compress(nnx.Linear(2, 2, rngs=nnx.Rngs(0))),
        lambda: l0nn.l0_penalty(nnx.Linear(2, 2, rngs=nnx.Rngs(0))),
        lambda: l0nn.prune("model"),
    ):
        must_fail(call, ["model"])
