"""Calibration building blocks: losses, group weights, initial parameters, gate noise, objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import l0jax
from l0jax._src.calibration import losses, model
from l0jax._src.operators import as_operator

# -- losses ----------------------------------------------------------------------------------


def test_target_scales_of_each_loss():
    y = np.array([0.0, 9.0, -3.0])
    np.testing.assert_array_equal(losses.target_scale(y, "mse"), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(losses.target_scale(y, "relative"), [1.0, 0.1, -0.5])
    np.testing.assert_allclose(losses.target_scale(y, "relative_abs"), [1.0, 0.1, 0.25])


def test_relative_loss_rejects_a_target_of_minus_one_and_points_to_relative_abs():
    with pytest.raises(ValueError, match=r"index \[1\] \(value -1\); use loss_type='relative_abs'"):
        losses.target_scale(np.array([2.0, -1.0]), "relative")


def test_unknown_loss_lists_the_choices():
    with pytest.raises(
        ValueError, match="unknown loss_type 'l1'; choose one of 'mse', 'relative', 'relative_abs'"
    ):
        losses.target_scale(np.ones(2), "l1")


def test_data_loss_is_l0_pythons_weighted_sum():
    pred, y = jnp.array([1.0, 5.0, 2.0]), jnp.array([2.0, 4.0, 0.0])
    scale = jnp.asarray(losses.target_scale(np.asarray(y), "relative"), jnp.float32)
    w = jnp.array([1.0, 0.5, 2.0])
    # ((y - p) / (y + 1))**2 weighted: (1/3)**2 * 1 + (1/5)**2 * 0.5 + 2**2 * 2
    expected = (1 / 3) ** 2 + 0.5 * (1 / 5) ** 2 + 2 * 4.0
    np.testing.assert_allclose(losses.data_loss(pred, y, scale, w), expected, rtol=1e-6)


def test_group_weights_normalise_and_multiply():
    groups = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(losses.group_weights(None, 6), np.ones(6))
    np.testing.assert_allclose(losses.group_weights(groups, 6), [1, 0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(losses.group_weights(groups, 6, normalize_groups=False), np.ones(6))
    np.testing.assert_allclose(
        losses.group_weights(groups, 6, group_multipliers={2: 3.0}), [1, 0.5, 0.5, 1, 1, 1]
    )
    np.testing.assert_allclose(
        losses.group_weights(groups, 6, normalize_groups=False, group_multipliers={0: 10.0, 1: 2.0}),
        [10, 2, 2, 1, 1, 1],
    )
    # Integral floats are accepted as ids, as torch.long() would accept them.
    np.testing.assert_allclose(losses.group_weights(groups.astype(float), 6), losses.group_weights(groups, 6))


@pytest.mark.parametrize(
    "groups, multipliers, match",
    [
        (None, {0: 2.0}, "group_multipliers requires target_groups"),
        (np.zeros(4, int), {99: 2.0}, "group_multipliers key 99 not found in target_groups"),
        (np.zeros(3, int), None, r"target_groups must have shape \(4,\)"),
        (np.array([0.5, 1, 1, 1]), None, "integer group ids"),
        (np.array(["a", "b", "a", "b"]), None, "integer group ids"),
        (np.zeros(4, int), {0: -1.0}, r"group_multipliers\[0\] must be >= 0"),
    ],
)
def test_group_errors(groups, multipliers, match):
    with pytest.raises(ValueError, match=match):
        losses.group_weights(groups, 4, group_multipliers=multipliers)


# -- initial parameters ----------------------------------------------------------------------


def test_initial_weights_scalar_array_default_and_shape_error():
    np.testing.assert_allclose(np.exp(model.initial_log_weight(None, 4)), np.ones(4), rtol=1e-7)
    np.testing.assert_allclose(np.exp(model.initial_log_weight(2.5, 4)), np.full(4, 2.5), rtol=1e-7)
    arr = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(np.exp(model.initial_log_weight(arr, 3)), arr, rtol=1e-7)
    assert np.isfinite(model.initial_log_weight(0.0, 2)).all()  # log(0 + 1e-8), as l0-python
    with pytest.raises(ValueError, match=r"init_weights array must have shape \(3,\), got \(4,\)"):
        model.initial_log_weight(np.ones(4), 3)
    with pytest.raises(ValueError, match="init_weights must be >= 0"):
        model.initial_log_weight(np.array([1.0, -1.0]), 2)
    with pytest.raises(ValueError, match="init_weights must be finite"):
        model.initial_log_weight(np.array([1.0, np.nan]), 2)


def test_initial_keep_probabilities_and_clipping():
    p = np.linspace(0.1, 0.9, 5)
    np.testing.assert_allclose(model.initial_log_alpha(p, 5), np.log(p / (1 - p)), rtol=1e-12)
    np.testing.assert_allclose(model.initial_log_alpha(0.7, 3), np.full(3, np.log(0.7 / 0.3)))
    edge = model.initial_log_alpha(np.array([0.0, 0.5, 1.0]), 3)
    np.testing.assert_allclose(edge, [np.log(1e-6 / (1 - 1e-6)), 0.0, np.log((1 - 1e-6) / 1e-6)], rtol=1e-9)
    with pytest.raises(ValueError, match=r"init_keep_prob array must have shape \(10,\)"):
        model.initial_log_alpha(np.ones(5), 10)
    with pytest.raises(ValueError, match=r"init_keep_prob must lie in \[0, 1\]"):
        model.initial_log_alpha(1.5, 3)


def test_init_params_jitter_is_drawn_from_the_key():
    key = jax.random.key(3)
    p = model.init_params(key, 1000, init_keep_prob=0.7, log_weight_jitter_sd=0.5, log_alpha_jitter_sd=0.1)
    q = model.init_params(key, 1000, init_keep_prob=0.7, log_weight_jitter_sd=0.5, log_alpha_jitter_sd=0.1)
    r = model.init_params(jax.random.key(4), 1000, init_keep_prob=0.7, log_weight_jitter_sd=0.5)
    assert not np.allclose(p["log_weight"], r["log_weight"])
    np.testing.assert_array_equal(p["log_alpha"], q["log_alpha"])
    np.testing.assert_array_equal(p["log_weight"], q["log_weight"])
    # Jitter sds: the sample sd of 1000 normals is within 10% of sigma (4.5 standard errors).
    assert abs(float(jnp.std(p["log_weight"])) / 0.5 - 1) < 0.1
    assert abs(float(jnp.std(p["log_alpha"] - np.log(0.7 / 0.3))) / 0.1 - 1) < 0.1
    bare = model.init_params(key, 10, log_alpha_jitter_sd=0.0, use_gates=False)
    assert set(bare) == {"log_weight"}
    np.testing.assert_array_equal(bare["log_weight"], np.full(10, np.log(1 + 1e-8), np.float32))


# -- gate noise --------------------------------------------------------------------------------


def test_gate_noise_is_uniform_on_the_open_interval():
    u = np.asarray(model.gate_noise(jax.random.key(0), 200_000))
    assert u.min() > 0 and u.max() < 1
    # Kolmogorov-Smirnov distance of 200k uniforms: 1.95/sqrt(n) is its 0.1% critical value.
    d = scipy.stats.kstest(u, "uniform").statistic
    assert d < 1.95 / np.sqrt(u.size)


def test_gate_noise_is_independent_across_gates_and_epochs():
    key = jax.random.key(1)
    a = np.asarray(model.gate_noise(key, 100_000, 0))  # epochs 0 and 1 of a run
    b = np.asarray(model.gate_noise(key, 100_000, 1))
    c = np.asarray(model.gate_noise(jax.random.key(2), 100_000, 0))  # another run
    n = a.size
    # Correlations of independent uniforms are N(0, 1/n): 5 standard errors.
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(a, c)[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(a[::2], a[1::2])[0, 1]) < 5 / np.sqrt(n / 2)
    np.testing.assert_array_equal(a, model.gate_noise(key, 100_000, 0))


@pytest.mark.parametrize("log_alpha, beta", [(-1.0, 2 / 3), (0.0, 2 / 3), (1.5, 0.5)])
def test_sampled_gates_follow_the_closed_forms(log_alpha, beta):
    n = 200_000
    params = {"log_weight": jnp.zeros(n), "log_alpha": jnp.full(n, log_alpha, jnp.float32)}
    hp = model.make_hyperparams(0.0, 0.0, -0.1, 1.1)
    z = np.asarray(model.sampled_gates(params, jax.random.key(2), jnp.float32(beta), hp))
    for observed, exact in [
        (np.mean(z == 0), l0jax.prob_zero(log_alpha, beta)),
        (np.mean(z == 1), l0jax.prob_one(log_alpha, beta)),
    ]:
        p = float(exact)
        assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_extreme_log_alpha_gives_finite_gates_penalty_and_gradients():
    n = 30
    hp = model.make_hyperparams(1e-3, 0.0, -0.1, 1.1)
    for value in (1e3, -1e3):
        params = {"log_weight": jnp.zeros(n), "log_alpha": jnp.full(n, value, jnp.float32)}
        det = model.deterministic_gates(params, jnp.float32(0.66), hp, "median")
        smp = model.sampled_gates(params, jax.random.key(0), jnp.float32(0.66), hp)
        pen = model.expected_active(params, jnp.float32(0.66), hp)
        grad = jax.grad(lambda la: model.expected_active({"log_alpha": la}, jnp.float32(0.66), hp))(
            params["log_alpha"]
        )
        for x in (det, smp, pen, grad):
            assert np.all(np.isfinite(np.asarray(x)))
        assert np.all(np.asarray(det) == (1.0 if value > 0 else 0.0))
        assert float(pen) == pytest.approx(n if value > 0 else 0.0)


# -- objective ---------------------------------------------------------------------------------


def test_objective_is_data_plus_weighted_penalties():
    rng = np.random.default_rng(0)
    M = rng.uniform(0, 1, (4, 6))
    y = rng.uniform(1, 5, 4)
    params = {
        "log_weight": jnp.asarray(rng.normal(size=6), jnp.float32),
        "log_alpha": jnp.asarray(rng.normal(size=6), jnp.float32),
    }
    hp = model.make_hyperparams(0.3, 0.2, -0.1, 1.1)
    scale = losses.target_scale(y, "relative")
    problem = model.Problem(
        as_operator(M), jnp.asarray(y, jnp.float32), jnp.asarray(scale, jnp.float32), jnp.ones(4, jnp.float32)
    )
    key, beta = jax.random.key(4), jnp.float32(0.5)
    loss, terms = model.objective(params, problem, hp, beta, key)
    z = np.asarray(model.sampled_gates(params, key, beta, hp), np.float64)
    w = np.exp(np.asarray(params["log_weight"], np.float64)) * z
    data = np.sum(((M @ w - y) / (y + 1)) ** 2)
    l0 = np.sum(1 / (1 + np.exp(-(np.asarray(params["log_alpha"], np.float64) - 0.5 * np.log(0.1 / 1.1)))))
    l2 = np.sum(np.exp(2 * np.asarray(params["log_weight"], np.float64)))
    np.testing.assert_allclose(terms["data"], data, rtol=1e-5)
    np.testing.assert_allclose(terms["l0"], l0, rtol=1e-5)
    np.testing.assert_allclose(terms["l2"], l2, rtol=1e-5)
    np.testing.assert_allclose(loss, data + 0.3 * l0 + 0.2 * l2, rtol=1e-5)


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="lambda_l0 must be >= 0"):
        model.make_hyperparams(-1e-3, 0.0, -0.1, 1.1)
    with pytest.raises(ValueError, match="lambda_l2 must be >= 0"):
        model.make_hyperparams(0.0, -1.0, -0.1, 1.1)
    with pytest.raises(ValueError, match="lambda_l0 must be finite"):
        model.make_hyperparams(np.nan, 0.0, -0.1, 1.1)
    with pytest.raises(ValueError, match="gamma must be < 0"):
        model.make_hyperparams(0.0, 0.0, 0.1, 1.1)
