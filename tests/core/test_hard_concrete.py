"""The pure hard-concrete core against its closed forms (Louizos et al. 2018, eqs. 9-14)."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import l0jax

GAMMA, ZETA = -0.1, 1.1
N_DRAWS = 2**20


def _survival(t, log_alpha, beta, gamma=GAMMA, zeta=ZETA):
    """P(s_bar > t) for t in (gamma, zeta): s = sigmoid((L + log_alpha) / beta), L ~ Logistic."""
    s = (t - gamma) / (zeta - gamma)
    return 1.0 / (1.0 + np.exp(-(log_alpha - beta * np.log(s / (1.0 - s)))))


def _density(t, log_alpha, beta, gamma=GAMMA, zeta=ZETA):
    """Closed-form density of the stretched concrete s_bar at t (derivative of 1 - survival)."""
    s = (t - gamma) / (zeta - gamma)
    q = _survival(t, log_alpha, beta, gamma, zeta)
    return q * (1.0 - q) * beta / (s * (1.0 - s)) / (zeta - gamma)


def _exact_mean(log_alpha, beta):
    """E[z] = P(z = 1) + integral over (0, 1) of t * density(t)."""
    inner, _ = integrate.quad(
        lambda t: t * _density(t, log_alpha, beta), 0.0, 1.0, limit=200, epsabs=1e-12, epsrel=1e-10
    )
    return _survival(1.0, log_alpha, beta) + inner


@pytest.mark.parametrize("noise", ["random", "hash"])
@pytest.mark.parametrize("log_alpha", [-3.0, 0.0, 0.7, 3.0])
@pytest.mark.parametrize("beta", [0.25, 2 / 3, 2.0])
def test_monte_carlo_matches_closed_forms(log_alpha, beta, noise):
    key = jax.random.key(1234)
    z = np.asarray(l0jax.hard_concrete(key, jnp.full((N_DRAWS,), log_alpha, jnp.float32), beta, noise=noise))
    p0 = float(l0jax.prob_zero(jnp.float32(log_alpha), beta))
    p1 = float(l0jax.prob_one(jnp.float32(log_alpha), beta))
    mean = _exact_mean(log_alpha, beta)

    for empirical, exact in [(np.mean(z == 0.0), p0), (np.mean(z == 1.0), p1)]:
        se = np.sqrt(exact * (1 - exact) / N_DRAWS)
        assert abs(empirical - exact) <= 4 * se, (empirical, exact, se)
    se_mean = np.std(z) / np.sqrt(N_DRAWS)
    assert abs(np.mean(z) - mean) <= 4 * se_mean, (np.mean(z), mean, se_mean)


def test_closed_forms_are_consistent_with_the_density():
    # P(z = 0) and P(z = 1) from integrating the density over the clipped tails.
    for log_alpha, beta in [(-1.0, 0.5), (0.5, 2 / 3), (2.0, 1.5)]:
        low, _ = integrate.quad(_density, GAMMA, 0.0, args=(log_alpha, beta), epsabs=1e-12)
        high, _ = integrate.quad(_density, 1.0, ZETA, args=(log_alpha, beta), epsabs=1e-12)
        np.testing.assert_allclose(float(l0jax.prob_zero(log_alpha, beta)), low, rtol=1e-5)
        np.testing.assert_allclose(float(l0jax.prob_one(log_alpha, beta)), high, rtol=1e-5)


def test_sampling_equals_reference_formula_given_the_noise(key):
    log_alpha = jax.random.normal(key, (1000,)) * 3
    u = l0jax.uniform_noise(jax.random.key(7), (1000,))
    beta, gamma, zeta = 0.4, -0.2, 1.3
    got = l0jax.hard_concrete_from_uniform(u, log_alpha, beta, gamma=gamma, zeta=zeta)
    un, la = np.asarray(u, np.float64), np.asarray(log_alpha, np.float64)
    ref = np.clip(1 / (1 + np.exp(-(np.log(un) - np.log(1 - un) + la) / beta)) * (zeta - gamma) + gamma, 0, 1)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6)
    # hard_concrete draws exactly that noise from its key.
    np.testing.assert_array_equal(
        np.asarray(l0jax.hard_concrete(jax.random.key(7), log_alpha, beta, gamma=gamma, zeta=zeta)),
        np.asarray(got),
    )
    assert float(u.min()) > 0 and float(u.max()) < 1


def test_sampling_from_given_noise_rejects_bad_noise():
    log_alpha = jnp.zeros((3,))
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        u = jnp.array([0.5, bad, 0.25])
        with pytest.raises(ValueError, match="u must lie strictly between 0 and 1"):
            l0jax.hard_concrete_from_uniform(u, log_alpha, 0.5)
    with pytest.raises(ValueError, match=r"u of shape \(2, 3\) must have log_alpha's shape \(3,\)"):
        l0jax.hard_concrete_from_uniform(jnp.full((2, 3), 0.5), log_alpha, 0.5)
    with pytest.raises(ValueError, match=r"u of shape \(4,\)"):
        l0jax.hard_concrete_from_uniform(jnp.full((4,), 0.5), log_alpha, 0.5)
    # A scalar u broadcasts to the gates' shape: the gates at the median of the noise.
    np.testing.assert_allclose(
        l0jax.hard_concrete_from_uniform(0.5, log_alpha, 0.5), np.full(3, 0.5), atol=1e-6
    )
    # Under jit the noise is a tracer and passes unchecked (the shape check still runs).
    jitted = jax.jit(lambda u: l0jax.hard_concrete_from_uniform(u, log_alpha, 0.5))
    assert jitted(jnp.full((3,), 0.5)).shape == (3,)
    with pytest.raises(ValueError, match="u of shape"):
        jitted(jnp.full((2, 3), 0.5))


def test_largest_uniform_draw_is_one_minus_two_to_the_minus_23():
    # What uniform_noise's docstring states about jax.random.uniform's float32 sampler.
    bits = np.array([0x3FFFFFFF], np.uint32).view(np.float32)[0]  # 1.0 with every mantissa bit set
    assert bits - np.float32(1) == np.float32(1 - 2**-23)
    u = np.asarray(l0jax.uniform_noise(jax.random.key(0), (1 << 20,)))
    assert u.max() <= np.float32(1 - 2**-23) and u.max() > np.float32(1 - 2**-18)


def test_eval_rules_equal_their_formulas():
    log_alpha = np.linspace(-8, 8, 301).astype(np.float32)
    beta = 0.5
    sig = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    median = np.clip(sig(log_alpha / beta) * (ZETA - GAMMA) + GAMMA, 0, 1)
    paper = np.clip(sig(log_alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)
    np.testing.assert_allclose(np.asarray(l0jax.hard_concrete_eval(log_alpha, beta)), median, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(l0jax.hard_concrete_eval(log_alpha, beta, rule="paper")), paper, atol=1e-6
    )
    # The median gate is the gate at u = 1/2.
    np.testing.assert_allclose(
        np.asarray(l0jax.hard_concrete_from_uniform(jnp.full(log_alpha.shape, 0.5), log_alpha, beta)),
        median,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="rule.*'median', 'paper'"):
        l0jax.hard_concrete_eval(log_alpha, beta, rule="mean")


def test_probabilities_sum_and_formula():
    log_alpha = jnp.linspace(-10, 10, 101)
    for beta in [0.1, 2 / 3, 3.0]:
        p_nz = np.asarray(l0jax.prob_nonzero(log_alpha, beta), np.float64)
        p_z = np.asarray(l0jax.prob_zero(log_alpha, beta), np.float64)
        np.testing.assert_allclose(p_nz + p_z, 1.0, atol=1e-6)
        ref = 1 / (1 + np.exp(-(np.asarray(log_alpha, np.float64) - beta * np.log(-GAMMA / ZETA))))
        np.testing.assert_allclose(p_nz, ref, atol=1e-6)
        assert np.all(np.asarray(l0jax.prob_one(log_alpha, beta)) <= p_nz)


def test_l0_penalty_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        log_alpha = jnp.array([-2.0, -0.3, 0.0, 0.8, 2.5], jnp.float64)
        beta, sizes = jnp.float64(0.7), jnp.array([1.0, 3.0, 2.0, 5.0, 1.0], jnp.float64)
        f = lambda la: l0jax.l0_penalty(la, beta, group_size=sizes)  # noqa: E731
        grad = np.asarray(jax.grad(f)(log_alpha))
        h = 1e-6
        fd = [(f(log_alpha.at[i].add(h)) - f(log_alpha.at[i].add(-h))) / (2 * h) for i in range(5)]
        np.testing.assert_allclose(grad, np.asarray(fd), rtol=1e-6)
        # The penalty is the expected number of non-zero parameters.
        expected = np.sum(np.asarray(l0jax.prob_nonzero(log_alpha, beta)) * np.asarray(sizes))
        np.testing.assert_allclose(float(f(log_alpha)), expected, rtol=1e-12)


def test_l0l2_penalty_groups_follow_eq_14(key):
    theta = jax.random.normal(key, (4, 3))
    log_alpha = jnp.array([[-1.0], [0.0], [1.0], [2.0]])  # one gate per row: groups of 3
    beta, lam0, lam2 = 2 / 3, 0.3, 0.05
    got = float(l0jax.l0l2_penalty(theta, log_alpha, beta, lambda_l0=lam0, lambda_l2=lam2))
    p = np.asarray(l0jax.prob_nonzero(log_alpha[:, 0], beta), np.float64)
    th = np.asarray(theta, np.float64)
    ref = np.sum(p * (lam2 / 2 * np.sum(th**2, axis=1) + 3 * lam0))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Its L0 part equals l0_penalty with group size 3.
    np.testing.assert_allclose(
        float(l0jax.l0l2_penalty(theta, log_alpha, beta, lambda_l0=1.0, lambda_l2=0.0)),
        float(l0jax.l0_penalty(log_alpha, beta, group_size=3)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="log_alpha of shape \\(4,\\) must broadcast"):
        l0jax.l0l2_penalty(theta, jnp.zeros(4), beta)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("beta", [0.1, 2 / 3])
def test_extreme_log_alpha_is_finite(dtype, beta, key):
    _check_extremes(dtype, beta, key)


def test_extreme_log_alpha_is_finite_in_float64(key):
    with jax.enable_x64(True):
        for beta in [0.1, 2 / 3]:
            _check_extremes(jnp.float64, beta, key)


def _check_extremes(dtype, beta, key):
    log_alpha = jnp.array([-1e3, -30.0, 0.0, 30.0, 1e3], dtype)
    z = l0jax.hard_concrete(key, log_alpha, beta)
    assert z.dtype == dtype
    zf = np.asarray(z, np.float64)
    assert np.all(np.isfinite(zf)) and np.all((zf >= 0) & (zf <= 1))
    assert zf[0] == 0.0 and zf[-1] == 1.0
    ze = np.asarray(l0jax.hard_concrete_eval(log_alpha, beta), np.float64)
    np.testing.assert_array_equal(ze[[0, -1]], [0.0, 1.0])
    assert np.isfinite(float(l0jax.l0_penalty(log_alpha, beta)))
    assert np.isfinite(float(l0jax.l0l2_penalty(jnp.ones(5, dtype), log_alpha, beta)))
    grads = [
        jax.grad(lambda la: l0jax.l0_penalty(la, beta))(log_alpha),
        jax.grad(lambda la: jnp.sum(l0jax.hard_concrete(key, la, beta).astype(jnp.float32)))(log_alpha),
        jax.grad(lambda la: jnp.sum(l0jax.hard_concrete_eval(la, beta).astype(jnp.float32)))(log_alpha),
        jax.grad(lambda la: l0jax.l0l2_penalty(jnp.ones(5, dtype), la, beta))(log_alpha),
    ]
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g, np.float64)))
    # Gradient of the penalty is largest where the gate is uncertain.
    g = np.asarray(grads[0], np.float64)
    assert g[2] > 0 and g[0] == 0.0 and g[-1] == 0.0


def test_same_key_same_sample_and_vmap_equals_loop():
    log_alpha = jnp.linspace(-2, 2, 64)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a = l0jax.hard_concrete(k1, log_alpha, 0.5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(l0jax.hard_concrete(k1, log_alpha, 0.5)))
    assert not np.array_equal(np.asarray(a), np.asarray(l0jax.hard_concrete(k2, log_alpha, 0.5)))
    keys = jax.random.split(jax.random.key(3), 6)
    batched = jax.vmap(lambda k: l0jax.hard_concrete(k, log_alpha, 0.5))(keys)
    looped = jnp.stack([l0jax.hard_concrete(k, log_alpha, 0.5) for k in keys])
    np.testing.assert_array_equal(np.asarray(batched), np.asarray(looped))


def test_traced_hyperparameters_trace_once(key):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, log_alpha, temperature, gamma, zeta):
        z = l0jax.hard_concrete(key, log_alpha, temperature, gamma=gamma, zeta=zeta)
        ze = l0jax.hard_concrete_eval(log_alpha, temperature, gamma=gamma, zeta=zeta)
        return jnp.sum(z) + jnp.sum(ze) + l0jax.l0_penalty(log_alpha, temperature, gamma=gamma, zeta=zeta)

    log_alpha = jnp.zeros(8)
    for t in [0.1, 0.3, 2 / 3, 1.0, 2.0]:
        out = step(key, log_alpha, jnp.float32(t), jnp.float32(-0.1), jnp.float32(1.1))
        assert np.isfinite(float(out))
    # A jitted gradient through all of them also works with traced hyperparameters.
    g = jax.jit(jax.grad(lambda la, t: l0jax.l0_penalty(la, t)))(log_alpha, jnp.float32(0.5))
    np.testing.assert_allclose(
        np.asarray(g),
        np.asarray(l0jax.prob_nonzero(log_alpha, 0.5) * l0jax.prob_zero(log_alpha, 0.5)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: l0jax.hard_concrete(jax.random.key(0), jnp.zeros(3), 0.0), "temperature"),
        (lambda: l0jax.hard_concrete(jax.random.key(0), jnp.zeros(3), np.float32(-1.0)), "temperature"),
        (lambda: l0jax.hard_concrete_eval(jnp.zeros(3), float("nan")), "temperature"),
        (lambda: l0jax.prob_nonzero(jnp.zeros(3), 0.5, gamma=0.0), "gamma"),
        (lambda: l0jax.prob_zero(jnp.zeros(3), 0.5, gamma=np.array(0.1)), "gamma"),
        (lambda: l0jax.prob_one(jnp.zeros(3), 0.5, zeta=1.0), "zeta"),
        (lambda: l0jax.l0_penalty(jnp.zeros(3), 0.5, zeta=0.9), "zeta"),
        (lambda: l0jax.keep_prob_to_log_alpha(0.0), "keep_prob"),
        (lambda: l0jax.keep_prob_to_log_alpha(np.array([0.5, 1.0])), "keep_prob"),
        (lambda: l0jax.keep_prob_to_log_alpha(1.5), "keep_prob"),
        (lambda: l0jax.l0l2_penalty(jnp.zeros(3), jnp.zeros(3), 0.5, lambda_l2=-1.0), "lambda_l2"),
        (lambda: l0jax.hard_concrete_eval(jnp.zeros(3), "2/3"), "temperature must be a real number"),
        (
            lambda: l0jax.l0l2_penalty(jnp.zeros(3), jnp.zeros(3), 0.5, lambda_l2=None),
            "lambda_l2 must be a real",
        ),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_keep_prob_to_log_alpha_is_the_logit():
    p = np.array([0.01, 0.2, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(np.asarray(l0jax.keep_prob_to_log_alpha(p)), np.log(p / (1 - p)), rtol=1e-5)
    # Under jit (traced), values at the edges are clipped instead of raising.
    out = jax.jit(l0jax.keep_prob_to_log_alpha)(jnp.array([0.0, 1.0]))
    assert np.all(np.isfinite(np.asarray(out))) and float(out[0]) < -15 and float(out[1]) > 15


# ----------------------------------------------------------------------------------------------
# The counter-based hash noise (hash_uniform, hard_concrete(..., noise="hash")). Its values are
# integer arithmetic and exact float32 scalings, identical on every machine, so the statistics
# below are fixed numbers, not seed-dependent outcomes.
# ----------------------------------------------------------------------------------------------


def test_hash_noise_lies_on_a_symmetric_grid_inside_the_open_interval():
    u = np.asarray(l0jax.hash_uniform(jax.random.key(0), (N_DRAWS,)), np.float64)
    k = u * 2**23 - 0.5
    np.testing.assert_array_equal(k, np.round(k))  # exactly (k + 1/2) / 2**23
    assert 0 < u.min() and u.max() < 1
    assert u.min() >= 0.5 / 2**23 and u.max() <= 1 - 0.5 / 2**23


@pytest.mark.parametrize("seed", range(3))
def test_hash_noise_is_uniform_and_independent(seed):
    from scipy import stats

    key = jax.random.key(seed)
    n = N_DRAWS
    a = np.asarray(l0jax.hash_uniform(key, (n,), counter=0), np.float64)
    b = np.asarray(l0jax.hash_uniform(key, (n,), counter=1), np.float64)
    c = np.asarray(l0jax.hash_uniform(jax.random.fold_in(key, 1), (n,), counter=0), np.float64)
    # Kolmogorov-Smirnov distance below its 0.1% critical value (1.95 / sqrt(n)).
    assert stats.kstest(a, "uniform").statistic < 1.95 / np.sqrt(n)
    # Neighbouring gates, consecutive counters and different keys are uncorrelated: each sample
    # correlation has standard error 1 / sqrt(n); 5 standard errors.
    for x, y in [(a[:-1], a[1:]), (a, b), (a, c), (a[: n // 2], a[n // 2 :])]:
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(x.size)
    # Bits of the grid index are balanced (each bit set in half of the draws, 5 standard errors).
    k = (a * 2**23 - 0.5).astype(np.int64)
    for bit in range(23):
        assert abs(np.mean((k >> bit) & 1) - 0.5) < 5 * 0.5 / np.sqrt(n)


def test_hash_noise_is_a_function_of_key_counter_and_global_index():
    key = jax.random.key(5)
    whole = np.asarray(l0jax.hash_uniform(key, (1000,), counter=7))
    # A block drawn with an offset equals the same slice of the whole draw (device-count invariance).
    np.testing.assert_array_equal(l0jax.hash_uniform(key, (300,), counter=7, offset=400), whole[400:700])
    # Shapes index the flattened array.
    np.testing.assert_array_equal(l0jax.hash_uniform(key, (10, 100), counter=7), whole.reshape(10, 100))
    np.testing.assert_array_equal(l0jax.hash_uniform(key, (1000,), counter=7), whole)
    assert not np.array_equal(l0jax.hash_uniform(key, (1000,), counter=8), whole)
    assert not np.array_equal(l0jax.hash_uniform(jax.random.key(6), (1000,), counter=7), whole)
    # Any key implementation is hashed through its raw data.
    rbg = l0jax.hash_uniform(jax.random.key(5, impl="rbg"), (1000,), counter=7)
    assert rbg.shape == (1000,) and not np.array_equal(rbg, whole)


def test_hash_gates_equal_the_map_of_their_noise(key):
    log_alpha = jax.random.normal(key, (4096,)) * 3
    beta, gamma, zeta = 0.4, -0.2, 1.3
    gates = l0jax.hard_concrete(jax.random.key(3), log_alpha, beta, gamma=gamma, zeta=zeta, noise="hash")
    u = l0jax.hash_uniform(jax.random.key(3), (4096,))
    ref = l0jax.hard_concrete_from_uniform(u, log_alpha, beta, gamma=gamma, zeta=zeta)
    np.testing.assert_allclose(np.asarray(gates), np.asarray(ref), atol=2e-6)
    assert not np.array_equal(
        gates, l0jax.hard_concrete(jax.random.key(3), log_alpha, beta, gamma=gamma, zeta=zeta)
    )


def test_hash_gates_are_finite_and_differentiable_at_extremes():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        log_alpha = jnp.array([-1e3, -5.0, 0.0, 5.0, 1e3], dtype)
        z = l0jax.hard_concrete(jax.random.key(0), log_alpha, 2 / 3, noise="hash")
        assert z.dtype == dtype
        np.testing.assert_array_equal(np.asarray(z[jnp.array([0, 4])], np.float32), [0.0, 1.0])
        grad = jax.grad(
            lambda la: jnp.sum(
                l0jax.hard_concrete(jax.random.key(0), la, 2 / 3, noise="hash").astype(jnp.float32)
            )
        )(log_alpha.astype(jnp.float32))
        assert np.all(np.isfinite(np.asarray(grad)))


def test_hash_noise_does_not_recompile_for_new_counters_or_keys():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def draw(key, counter, offset):
        return l0jax.hash_uniform(key, (64,), counter=counter, offset=offset)

    chex.clear_trace_counter()
    draws = {
        np.asarray(draw(jax.random.key(k), jnp.uint32(c), jnp.uint32(7))).tobytes()
        for k in range(3)
        for c in range(3)
    }
    assert len(draws) == 9  # nine different (key, counter) pairs, nine different draws, one trace

    @jax.jit
    @chex.assert_max_traces(n=1)
    def gates(key, t):
        return l0jax.hard_concrete(key, jnp.zeros(64), t, noise="hash")

    for t in (0.3, 0.5, 2.0):
        gates(jax.random.key(0), jnp.float32(t))


def test_hash_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        l0jax.hard_concrete(jax.random.key(0), jnp.zeros(3), 0.5, noise="philox")
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        l0jax.hard_concrete(0, jnp.zeros(3), 0.5, noise="hash")
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        l0jax.hash_uniform(jnp.float32(0.0), (3,))


def test_float64_noise_is_float32_outside_64_bit_mode_without_a_warning(key):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # jax.random warns when asked for a dtype it would truncate
        assert l0jax.uniform_noise(key, (3,), jnp.float64).dtype == jnp.float32
        with jax.enable_x64(True):
            u = l0jax.uniform_noise(key, (3,), jnp.float64)
            assert u.dtype == jnp.float64 and bool(jnp.all((u > 0) & (u < 1)))


def test_option_aliases_match_the_runtime_choices():
    # The Literal aliases of the signatures and the tuples the runtime checks use list the same options.
    from typing import get_args

    from l0jax._src import aliases, hard_concrete

    assert get_args(aliases.EvalRule) == hard_concrete.EVAL_RULES
    assert get_args(aliases.NoiseKind) == hard_concrete.NOISE_KINDS
