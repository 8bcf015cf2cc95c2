"""Properties of the pure core: gates, their probabilities and penalties, noise, schedules.

Shapes come from a small fixed set so that each compiles once; dtypes, values (huge, tiny, NaN,
inf), hyperparameters and wrong types are drawn.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import l0jax
from tests.properties.support import (
    ALL_DTYPES,
    FLOAT_DTYPES,
    NONFINITE,
    SIGNED,
    WRONG_TYPES,
    arrays,
    cast,
    must_fail,
    outcome,
)

SHAPES = [(), (0,), (1,), (5,), (2, 3)]
GAMMA, ZETA = -0.1, 1.1
# Absolute error of a value in [0, 1] rounded to each output dtype (twice its spacing near 1).
ATOL = {
    np.dtype(np.float16): 2e-3,
    np.dtype("bfloat16"): 1.6e-2,
    np.dtype(np.float32): 3e-6,
    np.dtype(np.float64): 1e-12,
}


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _out_dtype(dtype):
    """Gates keep a floating input's dtype (as JAX holds it: float64 is float32 without x64)."""
    dt = np.dtype(dtype)
    if dt.kind == "f" or dt == np.dtype("bfloat16"):
        return np.dtype(jnp.asarray(np.zeros((), dt)).dtype)
    return np.dtype(jnp.result_type(float))


def _valid_values(dtype) -> bool:
    """Real numbers: floats, integers, bool, and object arrays of Python floats."""
    return np.dtype(dtype).kind in "biufO" or np.dtype(dtype) == np.dtype("bfloat16")


def _closed_forms(la, t, g, z):
    """Each gate function's value in float64 NumPy, from the paper's formulas."""
    clip = lambda s: np.clip(s * (z - g) + g, 0, 1)  # noqa: E731
    with np.errstate(invalid="ignore", over="ignore"):
        return {
            "eval_median": clip(_sigmoid(la / t)),
            "eval_paper": clip(_sigmoid(la)),
            "prob_nonzero": _sigmoid(la - t * np.log(-g / z)),
            "prob_zero": _sigmoid(t * np.log(-g / z) - la),
            "prob_one": _sigmoid(la - t * np.log((1 - g) / (z - 1))),
        }


def _gate_calls(la, t, **kw):
    return {
        "eval_median": lambda: l0jax.hard_concrete_eval(la, t, **kw),
        "eval_paper": lambda: l0jax.hard_concrete_eval(la, t, rule="paper", **kw),
        "prob_nonzero": lambda: l0jax.prob_nonzero(la, t, **kw),
        "prob_zero": lambda: l0jax.prob_zero(la, t, **kw),
        "prob_one": lambda: l0jax.prob_one(la, t, **kw),
    }


@given(shape=st.sampled_from(SHAPES), dtype=st.sampled_from(ALL_DTYPES), data=st.data())
def test_gate_functions_match_their_closed_forms_or_name_log_alpha(shape, dtype, data):
    la = cast(data.draw(arrays(shape)), dtype)
    t = data.draw(st.sampled_from([2 / 3, 0.1, 1.0, 5.0]))
    calls = _gate_calls(la, t)
    calls["sample"] = lambda: l0jax.hard_concrete(jax.random.key(0), la, t)
    calls["sample_hash"] = lambda: l0jax.hard_concrete(jax.random.key(0), la, t, noise="hash")
    if not _valid_values(dtype):
        for call in calls.values():
            must_fail(call, ["log_alpha"])
        return
    exact = la.astype(np.float64)
    expected = _closed_forms(exact, t, GAMMA, ZETA)
    for name, call in calls.items():
        out = outcome(call, [])
        assert out.shape == shape and out.dtype == _out_dtype(dtype), (name, out.shape, out.dtype)
        got = np.asarray(out, np.float64)
        if name in expected:
            np.testing.assert_allclose(got, expected[name], rtol=0, atol=ATOL[out.dtype], equal_nan=True)
        else:  # a sample: in [0, 1], exactly 1 at log_alpha = +inf and 0 at -inf, NaN stays NaN
            assert np.all((got >= 0) | np.isnan(exact)) and np.all((got <= 1) | np.isnan(exact))
            np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
            np.testing.assert_array_equal(got[exact == np.inf], 1.0)
            np.testing.assert_array_equal(got[exact == -np.inf], 0.0)


HYPER = st.one_of(
    SIGNED,
    NONFINITE,
    WRONG_TYPES,
    st.builds(np.float32, st.floats(0.01, 10.0)),
    st.builds(lambda v, dt: np.asarray(v, dt), st.floats(-5, 5), st.sampled_from(FLOAT_DTYPES)),
    st.just(True),
)


def _as_real(value):
    try:
        arr = np.asarray(value, np.float64)
    except (ValueError, TypeError):
        return None
    return arr if isinstance(value, (bool, int, float, np.number, np.ndarray)) else None


@given(temperature=HYPER, gamma=st.one_of(st.just(GAMMA), HYPER), zeta=st.one_of(st.just(ZETA), HYPER))
def test_gate_hyperparameters_are_checked_and_named(temperature, gamma, zeta):
    la = np.array([-3.0, 0.0, 0.7, 4.0], np.float32)
    t, g, z = (_as_real(v) for v in (temperature, gamma, zeta))
    valid = (
        t is not None
        and g is not None
        and z is not None
        and np.isfinite(t)
        and t > 0
        and np.isfinite(g)
        and g < 0
        and np.isfinite(z)
        and z > 1
    )
    calls = _gate_calls(la, temperature, gamma=gamma, zeta=zeta)
    calls["sample"] = lambda: l0jax.hard_concrete(jax.random.key(1), la, temperature, gamma=gamma, zeta=zeta)
    for name, call in calls.items():
        if not valid:
            must_fail(call, ["temperature", "gamma", "zeta"])
            continue
        out = np.asarray(outcome(call, []), np.float64)
        assert out.shape == (4,) and np.all((out >= 0) & (out <= 1)), name
        if name in ("eval_median", "eval_paper", "prob_nonzero", "prob_zero", "prob_one"):
            expected = _closed_forms(la.astype(np.float64), float(t), float(g), float(z))[name]
            # The hyperparameters are rounded to float32 like log_alpha: a relative 1e-7 in each.
            np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


@given(
    key=st.one_of(
        st.just(jax.random.key(3)),
        st.just(jax.random.PRNGKey(3)),
        st.integers(-5, 5),
        WRONG_TYPES,
        st.just(np.zeros(2, np.float32)),
    ),
    noise=st.sampled_from(["random", "hash", "gaussian", None]),
)
def test_hard_concrete_key_and_noise_are_checked(key, noise):
    la = np.zeros(3, np.float32)
    out = outcome(lambda: l0jax.hard_concrete(key, la, 0.5, noise=noise), ["key", "noise"])
    valid_key = isinstance(key, jax.Array) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32
    )
    if valid_key and noise in ("random", "hash"):
        assert out is not None and out.shape == (3,) and bool(jnp.all((out >= 0) & (out <= 1)))
    else:
        assert out is None


SHAPE_ARGS = st.one_of(
    st.sampled_from([(), (0,), (1,), (7,), (2, 3), (2, 0, 4)]),
    st.sampled_from([(-1,), (2.5,), ("a",), None, "3", (2, None)]),
    st.integers(-2, 4),
)


def _valid_shape(shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        return shape >= 0
    return isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)


@given(shape=SHAPE_ARGS, counter=st.one_of(st.integers(0, 2**31), WRONG_TYPES), offset=st.integers(0, 100))
def test_hash_uniform_is_strictly_inside_the_unit_interval(shape, counter, offset):
    out = outcome(
        lambda: l0jax.hash_uniform(jax.random.key(0), shape, counter=counter, offset=offset),
        ["shape", "counter"],
    )
    valid = _valid_shape(shape) and isinstance(counter, int)
    assert (out is not None) == valid
    if valid:
        want = (shape,) if isinstance(shape, int) else shape
        assert out.shape == want and out.dtype == jnp.float32
        assert bool(jnp.all((out > 0) & (out < 1)))


@given(shape=SHAPE_ARGS, dtype=st.sampled_from([*FLOAT_DTYPES, np.int32, np.bool_, "float", None]))
def test_uniform_noise_is_strictly_inside_the_unit_interval(shape, dtype):
    out = outcome(lambda: l0jax.uniform_noise(jax.random.key(0), shape, dtype), ["shape", "dtype"])
    if _valid_shape(shape):  # any dtype: non-float ones draw the default float
        assert out is not None
        want = (shape,) if isinstance(shape, int) else shape
        assert out.shape == want and bool(jnp.all((out > 0) & (out < 1)))
    else:
        assert out is None


@given(shape=st.sampled_from(SHAPES), dtype=st.sampled_from(ALL_DTYPES), data=st.data())
def test_keep_prob_to_log_alpha_is_the_logit_or_names_keep_prob(shape, dtype, data):
    elements = st.one_of(st.floats(0, 1), st.sampled_from([-0.5, 1.5, 1e-30, 1 - 1e-7]))
    p = cast(data.draw(arrays(shape, elements=elements)), dtype)
    out = outcome(lambda: l0jax.keep_prob_to_log_alpha(p), ["keep_prob"])
    exact = p.astype(np.float64) if _valid_values(dtype) else None
    valid = exact is not None and bool(np.all((exact > 0) & (exact < 1)))
    assert (out is not None) == valid
    if valid:
        assert out.shape == shape
        # The probability is clipped to [eps, 1 - eps] of the compute dtype, then logit'ed.
        eps = np.finfo(np.dtype(out.dtype)).eps
        clipped = np.clip(exact, eps, 1 - eps)
        np.testing.assert_allclose(
            np.asarray(out, np.float64), np.log(clipped / (1 - clipped)), rtol=1e-5, atol=1e-5
        )


@given(
    shape=st.sampled_from([(0,), (1,), (5,), (2, 3)]),
    dtype=st.sampled_from(FLOAT_DTYPES),
    group_size=st.one_of(st.sampled_from([1, 3, 0.5, 0, -1, np.nan]), WRONG_TYPES),
    lambdas=st.tuples(st.sampled_from([0.0, 1e-3, 1.0, -1.0]), st.sampled_from([0.0, 2.0, -1.0, np.inf])),
    data=st.data(),
)
def test_penalties_are_sums_of_gate_probabilities(shape, dtype, group_size, lambdas, data):
    la = cast(data.draw(arrays(shape, elements=st.floats(-8, 8), nonfinite=False)), dtype)
    theta = data.draw(arrays(shape, elements=st.floats(-3, 3), nonfinite=False)).astype(np.float32)
    p = _closed_forms(la.astype(np.float64), 2 / 3, GAMMA, ZETA)["prob_nonzero"]
    atol = ATOL[np.dtype(dtype)] * max(1, p.size) * 10
    gs = _as_real(group_size)
    out = outcome(lambda: l0jax.l0_penalty(la, 2 / 3, group_size=group_size), ["group_size"])
    if gs is not None and np.isfinite(gs) and gs >= 0:
        assert out is not None and out.shape == ()
        np.testing.assert_allclose(
            float(out), float(gs) * p.sum(), rtol=1e-3, atol=atol * max(1.0, float(gs))
        )
    else:
        assert out is None
    l0, l2 = lambdas
    out = outcome(
        lambda: l0jax.l0l2_penalty(theta, la, 2 / 3, lambda_l0=l0, lambda_l2=l2), ["lambda_l0", "lambda_l2"]
    )
    if l0 >= 0 and 0 <= l2 < np.inf:
        expected = np.sum(p * (0.5 * l2 * theta.astype(np.float64) ** 2 + l0))
        assert out is not None and out.shape == ()
        np.testing.assert_allclose(float(out), expected, rtol=1e-3, atol=atol * (1 + l2 * 9))
    else:
        assert out is None


SCALAR = st.one_of(SIGNED, NONFINITE, WRONG_TYPES, st.builds(np.float16, st.floats(0.01, 10)))


@given(
    init=SCALAR,
    final=st.one_of(st.sampled_from([0.1, 2.0]), SCALAR),
    steps=st.one_of(st.integers(-1, 50), st.sampled_from([2.0, "3", None, True])),
    kind=st.sampled_from(["exponential", "linear", "cosine", "step", None]),
)
def test_temperature_schedules_run_from_init_to_final(init, final, steps, kind):
    schedule = outcome(
        lambda: l0jax.temperature_schedule(init, final, steps, kind), ["init", "final", "steps", "kind"]
    )
    a, b = _as_real(init), _as_real(final)
    valid = (
        a is not None
        and b is not None
        and np.isfinite(a)
        and a > 0
        and np.isfinite(b)
        and b > 0
        and isinstance(steps, int)
        and not isinstance(steps, bool)
        and steps >= 1
        and kind is not None
        and kind != "step"
    )
    assert (schedule is not None) == valid
    if not valid:
        return
    a32, b32 = float(np.float32(a)), float(np.float32(b))
    values = np.array([float(schedule(c)) for c in (0, steps // 2, steps, steps + 7)])
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values[[0, 2, 3]], [a32, b32, b32], rtol=1e-5)
    assert min(a32, b32) * (1 - 1e-5) <= values[1] <= max(a32, b32) * (1 + 1e-5)


@given(value=SCALAR, steps=st.integers(0, 3))
def test_constant_and_annealed_temperature_are_carried_by_the_optimizer(value, steps):
    v = _as_real(value)
    valid = v is not None and np.isfinite(v) and v > 0 and np.float32(v) > 0
    schedule = outcome(lambda: l0jax.constant_temperature(value), ["temperature"])
    tx = outcome(lambda: l0jax.anneal_temperature(value), ["temperature", "schedule"])
    assert (schedule is not None) == valid and (tx is not None) == valid
    if not valid:
        return
    assert float(schedule(5)) == float(np.float32(v))
    params = {"w": jnp.zeros(2)}
    tx = optax.chain(optax.sgd(0.1), tx)
    state = tx.init(params)
    for _ in range(steps):
        _, state = tx.update(params, state, params)
    assert float(l0jax.current_temperature(state)) == float(np.float32(v))


@pytest.mark.parametrize("thing", [None, 3, "state", {"a": 1}, optax.sgd(0.1).init({"w": jnp.zeros(1)})])
def test_current_temperature_names_a_state_without_one(thing):
    must_fail(lambda: l0jax.current_temperature(thing), ["opt_state", "anneal_temperature"])
