"""Survey calibration end to end: l0-python's behaviours (ported), our fixes, errors and determinism.

Problems share a few shapes so that the compiled loop is reused across tests (a new shape compiles).
"""

import jax
import numpy as np
import optax
import pytest
import scipy.sparse as sp

import l0jax
from l0jax import CalibrationResult, SparseCalibrationWeights, calibrate
from l0jax._src.calibration import engine
from l0jax._src.calibration.engine import NonFiniteLossError


def _random(q, n, density, seed):
    rng = np.random.default_rng(seed)
    return sp.random(q, n, density=density, format="csr", random_state=rng), rng


@pytest.fixture(scope="module")
def small():
    """20 targets x 100 households, the shape of most tests below."""
    M, rng = _random(20, 100, 0.3, 123)
    return M, rng.normal(size=20) + 10


@pytest.fixture(scope="module")
def grouped():
    """39 targets (3 singletons and two groups of 18) x 25 households: more targets than households,
    and the group targets disagree with the singletons, so the loss weights decide the trade-off.
    """
    rng = np.random.default_rng(7)
    M = sp.random(
        39, 25, density=0.5, format="csr", random_state=rng, data_rvs=lambda k: rng.uniform(0.5, 1.5, k)
    )
    y = M @ rng.lognormal(1, 0.5, 25)
    y[3:] *= rng.uniform(0.5, 1.5, 36)
    groups = np.array([0, 1, 2] + [3] * 18 + [4] * 18)
    return M, y, groups


def _fit(M, y, seed=0, **kw):
    kw = {"lambda_l0": 1e-4, "lr": 0.1, "epochs": 500, "loss_type": "relative", **kw}
    return SparseCalibrationWeights(n_features=M.shape[1], seed=seed).fit(M, y, **kw)


# Tests of an optimisation's outcome take this fixture and must pass for every seed 0-9; seeds 1-9
# run with the slow tests (`make test-all`).
@pytest.fixture(params=[pytest.param(s, marks=pytest.mark.slow) if s else s for s in range(10)])
def seed(request):
    return request.param


def _rel_err(y, pred):
    return np.abs((y - pred) / (y + 1))


# -- l0-python's test_calibration.py, ported ---------------------------------------------------


def test_weights_are_numpy_and_gated(small, seed):
    M, y = small
    model = SparseCalibrationWeights(n_features=100, init_weights=1.0, seed=seed).fit(M, y, epochs=100)
    w = model.get_weights(deterministic=True)
    assert isinstance(w, np.ndarray) and w.shape == (100,)
    # exp(log_weight) * gate: zero exactly where the deterministic gate is closed, positive elsewhere.
    np.testing.assert_array_equal(w > 0, model.get_deterministic_gates() > 0)
    # Sampled gates lie in [0, 1]: a sampled weight never exceeds the ungated one.
    sampled = model.get_weights(deterministic=False)
    assert np.all(np.isfinite(sampled))
    assert np.all(sampled <= np.exp(model.log_weight.astype(np.float64)) * (1 + 1e-6))
    # The fit moved the weights towards the targets: closer than the initial weights of 1.
    assert _rel_err(y, M @ w).mean() < 0.5 * _rel_err(y, M @ np.ones(100)).mean()


def test_sparse_ground_truth_with_relative_loss(seed):
    rng = np.random.default_rng(42)
    M = sp.csr_matrix(rng.lognormal(1.5, 0.25, (200, 2000)))
    w_true = np.zeros(2000)
    w_true[rng.choice(2000, 1000, replace=False)] = rng.lognormal(2.0, 1.0, 1000)
    y = M @ w_true
    model = SparseCalibrationWeights(
        n_features=2000, beta=0.66, init_keep_prob=0.3, init_weights=1.0, log_weight_jitter_sd=0.5, seed=seed
    )
    model.fit(M, y, lambda_l0=5e-4, lambda_l2=1e-6, lr=0.2, epochs=2000, loss_type="relative")
    assert 0.3 <= model.get_sparsity() <= 0.7
    assert np.mean(((y - model.predict(M)) / (y + 1)) ** 2) < 1e-3  # l0-python asks < 0.1


def test_sparsity_rises_strictly_with_lambda_l0(seed):
    M, rng = _random(50, 200, 0.3, 123)
    y = rng.normal(size=50) + 10
    sparsity = [
        SparseCalibrationWeights(n_features=200, init_keep_prob=0.5, seed=seed)
        .fit(M, y, lambda_l0=lam, lr=0.1, epochs=2000, loss_type="relative")
        .get_sparsity()
        for lam in (1e-4, 1e-3, 1e-2)
    ]
    assert sparsity[0] < sparsity[1] < sparsity[2]


def test_relative_loss_beats_mse_on_relative_error(seed):
    rng = np.random.default_rng(123)
    M = sp.random(40, 100, density=0.5, format="csr", random_state=rng)
    M.data = np.abs(M.data) * 1000
    y = rng.uniform(1000, 100000, 40)
    mse = _fit(M, y, seed, lambda_l0=1e-10, loss_type="mse")
    rel = _fit(M, y, seed, lambda_l0=1e-3, loss_type="relative")
    assert np.mean(_rel_err(y, rel.predict(M))) <= np.mean(_rel_err(y, mse.predict(M)))


def test_active_weights_on_identity():
    n = 100
    model = SparseCalibrationWeights(n_features=n, init_weights=1.0, seed=0)
    model.fit(sp.eye(20, n, format="csr"), np.ones(20), lambda_l0=0.01, epochs=100)
    info = model.get_active_weights()
    assert set(info) == {"indices", "values", "count"}
    assert info["count"] == len(info["indices"]) == len(info["values"])
    assert np.all(info["values"] > 0)
    w = model.get_weights(deterministic=True)
    np.testing.assert_array_equal(info["indices"], np.flatnonzero(w > 0))
    assert model.get_sparsity() == pytest.approx(1 - info["count"] / n)


def test_predictions_are_deterministic_and_equal_m_times_weights(small):
    M, y = small
    model = SparseCalibrationWeights(n_features=100, seed=0).fit(M, y, epochs=100)
    p1, p2 = model.predict(M), model.predict(M)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1, M @ model.get_weights(deterministic=True).astype(np.float64), rtol=1e-12)


def test_l2_limits_weights(small, seed):
    M, _ = small
    y = np.random.default_rng(123).normal(size=20) * 100
    with pytest.warns(l0jax.CalibrationWarning, match="cannot be reached by non-negative weights"):
        no_l2 = _fit(M, y, seed, lambda_l2=0.0, epochs=200, loss_type="mse", lr=0.01)
    with pytest.warns(l0jax.CalibrationWarning, match="cannot be reached by non-negative weights"):
        with_l2 = _fit(M, y, seed, lambda_l2=0.01, epochs=200, loss_type="mse", lr=0.01)
    assert with_l2.get_weights(True).max() <= no_l2.get_weights(True).max()


def test_pure_l2_shrinks_without_sparsifying(seed):
    rng = np.random.default_rng(42)
    M = sp.random(30, 50, density=0.5, format="csr", random_state=rng)
    M.data = np.abs(M.data) * 2
    y = np.full(30, 10.0)
    kw = {"lambda_l0": 0.0, "epochs": 1000, "lr": 0.02, "loss_type": "mse"}
    plain = SparseCalibrationWeights(50, init_weights=2.0, init_keep_prob=0.999, seed=seed).fit(
        M, y, lambda_l2=0.0, **kw
    )
    l2 = SparseCalibrationWeights(50, init_weights=2.0, init_keep_prob=0.999, seed=seed).fit(
        M, y, lambda_l2=10.0, **kw
    )
    wp, wl = plain.get_weights(True), l2.get_weights(True)
    assert (wl > 1e-8).sum() >= 45
    assert np.linalg.norm(wl) < np.linalg.norm(wp)
    assert wl.std() / wl.mean() < wp.std() / wp.mean()
    assert wl.max() < wp.max()
    assert np.mean(np.abs((y - l2.predict(M)) / y)) < 0.5


def test_l0_and_l2_combined(seed):
    rng = np.random.default_rng(42)
    M = sp.random(30, 50, density=0.4, format="csr", random_state=rng)
    M.data = np.abs(M.data) * 3
    y = rng.uniform(5, 20, 30)
    kw = {"epochs": 2000, "lr": 0.02, "loss_type": "mse"}
    l0_only = SparseCalibrationWeights(50, init_weights=2.0, seed=seed).fit(
        M, y, lambda_l0=0.01, lambda_l2=0.0, **kw
    )
    both = SparseCalibrationWeights(50, init_weights=2.0, seed=seed).fit(
        M, y, lambda_l0=0.01, lambda_l2=0.1, **kw
    )
    a, b = l0_only.get_weights(True), both.get_weights(True)
    assert (a > 1e-6).sum() < 0.8 * 50 and (b > 1e-6).sum() < 0.8 * 50
    assert np.linalg.norm(b[b > 1e-6]) < np.linalg.norm(a[a > 1e-6])
    for m in (l0_only, both):
        assert np.mean(_rel_err(y, m.predict(M))) < 0.35


def test_group_averaging_helps_singleton_targets(grouped, seed):
    M, y, groups = grouped
    plain = _fit(M, y, seed)
    balanced = _fit(M, y, seed, target_groups=groups)
    e_plain, e_bal = _rel_err(y, plain.predict(M)), _rel_err(y, balanced.predict(M))
    # Each singleton weighs as much as a whole group of 18 once groups are normalised.
    assert e_bal[:3].mean() < 0.5 * e_plain[:3].mean()
    group_means = [e_bal[:3].mean(), e_bal[3:21].mean(), e_bal[21:].mean()]
    assert max(group_means) < 10 * min(group_means)


def test_normalize_groups_false_is_exactly_no_groups(grouped):
    M, y, groups = grouped
    plain = _fit(M, y)
    unnormalised = _fit(M, y, target_groups=groups, normalize_groups=False)
    np.testing.assert_array_equal(plain.get_weights(True), unnormalised.get_weights(True))


def test_group_multipliers_without_normalisation(grouped, seed):
    M, y, groups = grouped
    base = _fit(M, y, seed, target_groups=groups, normalize_groups=False)
    boosted = _fit(
        M,
        y,
        seed,
        target_groups=groups,
        normalize_groups=False,
        group_multipliers={0: 10.0, 1: 10.0, 2: 10.0},
    )
    assert _rel_err(y, boosted.predict(M))[:3].mean() < 0.5 * _rel_err(y, base.predict(M))[:3].mean()


def test_group_multipliers_with_normalisation(grouped, seed):
    M, y, groups = grouped
    base = _fit(M, y, seed, target_groups=groups)
    boosted = _fit(M, y, seed, target_groups=groups, group_multipliers={3: 5.0})
    assert _rel_err(y, boosted.predict(M))[3:21].mean() < 0.8 * _rel_err(y, base.predict(M))[3:21].mean()


def test_group_edge_cases_converge(grouped, seed):
    M, y, _ = grouped
    for groups in (np.zeros(39, int), np.arange(39), np.array([0] * 30 + list(range(1, 10)))):
        model = _fit(M, y, seed, target_groups=groups, lambda_l0=1e-5, lr=0.2, epochs=500)
        assert np.mean(_rel_err(y, model.predict(M))) < 0.5


def test_group_multiplier_errors(small):
    M, y = small
    model = SparseCalibrationWeights(n_features=100)
    with pytest.raises(ValueError, match="group_multipliers requires target_groups"):
        model.fit(M, y, epochs=10, group_multipliers={0: 2.0})
    with pytest.raises(ValueError, match="group_multipliers key 99 not found"):
        model.fit(M, y, epochs=10, target_groups=np.zeros(20, int), group_multipliers={99: 2.0})


def test_init_options_and_shape_errors():
    assert np.allclose(np.exp(SparseCalibrationWeights(50).log_weight), 1.0, atol=1e-6)
    assert np.allclose(np.exp(SparseCalibrationWeights(50, init_weights=2.5).log_weight), 2.5, atol=1e-6)
    arr = np.random.default_rng(0).uniform(0.5, 2.0, 50)
    np.testing.assert_allclose(
        np.exp(SparseCalibrationWeights(50, init_weights=arr).log_weight), arr, rtol=1e-5
    )
    with pytest.raises(ValueError, match="must have shape"):
        SparseCalibrationWeights(50, init_weights=np.ones(51))
    scalar = SparseCalibrationWeights(20, init_keep_prob=0.7)
    assert np.all(np.abs(scalar.log_alpha - np.log(0.7 / 0.3)) < 0.1)
    probs = np.linspace(0.1, 0.9, 20)
    array = SparseCalibrationWeights(20, init_keep_prob=probs)
    assert np.all(np.abs(array.log_alpha - np.log(probs / (1 - probs))) < 0.1)
    with pytest.raises(ValueError, match="must have shape"):
        SparseCalibrationWeights(10, init_keep_prob=np.ones(5))
    assert np.all(
        np.isfinite(SparseCalibrationWeights(3, init_keep_prob=np.array([0.0, 0.5, 1.0])).log_alpha)
    )


def test_weight_jitter_is_added_once(small):
    M, y = small
    jittered = SparseCalibrationWeights(100, init_weights=1.0, log_weight_jitter_sd=0.5, seed=0)
    before = jittered.log_weight.copy()
    jittered.fit(M, y, epochs=1, lr=1e-6)
    # One epoch at lr 1e-6 moves each log weight by at most ~1e-6: the rest is the jitter.
    jitter = jittered.log_weight - before
    assert 0.4 < jitter.std() < 0.6
    plain = SparseCalibrationWeights(100, init_weights=1.0, seed=0)
    start = plain.log_weight.copy()
    plain.fit(M, y, epochs=1, lr=0.01)
    assert np.abs(plain.log_weight - start).max() <= 0.0101  # an Adam step is at most lr
    # A second fit continues: no new jitter.
    kept = jittered.log_weight.copy()
    jittered.fit(M, y, epochs=1, lr=1e-6)
    assert np.abs(jittered.log_weight - kept).max() < 1e-5


def test_seed_and_key_determinism():
    a = SparseCalibrationWeights(50, log_alpha_jitter_sd=0.1, seed=123)
    b = SparseCalibrationWeights(50, log_alpha_jitter_sd=0.1, seed=123)
    c = SparseCalibrationWeights(50, log_alpha_jitter_sd=0.1, seed=456)
    np.testing.assert_array_equal(a.log_alpha, b.log_alpha)
    assert not np.allclose(a.log_alpha, c.log_alpha)
    d = SparseCalibrationWeights(50, log_alpha_jitter_sd=0.1, key=jax.random.key(123))
    np.testing.assert_array_equal(a.log_alpha, d.log_alpha)
    # No global RNG: seed=None is seed 0.
    np.testing.assert_array_equal(
        SparseCalibrationWeights(50).log_alpha, SparseCalibrationWeights(50, seed=0).log_alpha
    )


def test_same_seed_gives_bitwise_the_same_weights_and_calibrate_agrees(small):
    M, y = small
    kw = {"lambda_l0": 1e-3, "lr": 0.1, "epochs": 300, "loss_type": "relative"}
    a = SparseCalibrationWeights(100, log_weight_jitter_sd=0.3, seed=7).fit(M, y, **kw)
    b = SparseCalibrationWeights(100, log_weight_jitter_sd=0.3, seed=7).fit(M, y, **kw)
    np.testing.assert_array_equal(a.get_weights(True), b.get_weights(True))
    res = calibrate(M, y, key=7, log_weight_jitter_sd=0.3, **kw)
    np.testing.assert_array_equal(res.weights, a.get_weights(True))
    other = calibrate(M, y, key=8, log_weight_jitter_sd=0.3, **kw)
    assert not np.array_equal(other.weights, res.weights)


def test_extreme_log_alpha_stays_finite(small):
    M, y = small
    model = SparseCalibrationWeights(n_features=100, init_keep_prob=0.5).fit(M, y, epochs=1)
    state = model.state
    model._state = state._replace(params={**state.params, "log_alpha": np.full(100, 1000.0, np.float32)})
    model.result_ = None
    for values in (model.get_deterministic_gates(), model.get_weights(deterministic=False)):
        assert np.all(np.isfinite(values))
    assert np.all(model.get_deterministic_gates() == 1.0)
    assert model.get_l0_penalty() == pytest.approx(100.0)


def test_public_names():
    from l0jax._src.calibration import api, estimator, result

    assert {"calibrate", "CalibrationResult", "SparseCalibrationWeights"} <= set(l0jax.__all__)
    assert l0jax.calibrate is api.calibrate and l0jax.CalibrationResult is result.CalibrationResult
    assert l0jax.SparseCalibrationWeights is estimator.SparseCalibrationWeights
    assert l0jax.__all__ == sorted(l0jax.__all__)


def test_non_finite_loss_error_and_calibration_state_are_public(small):
    M, y = small
    with pytest.raises(l0jax.NonFiniteLossError, match="NaN or infinite at epoch") as info:
        l0jax.calibrate(M, y, key=0, lr=1e30, loss_type="mse", epochs=20, log_every=10, polish=False)
    assert isinstance(info.value, FloatingPointError)
    assert isinstance(info.value.state, l0jax.CalibrationState)
    assert "NonFiniteLossError" in l0jax.__all__ and "CalibrationState" in l0jax.__all__


def test_predict_takes_every_sparse_format(small):
    M, y = small
    model = SparseCalibrationWeights(n_features=100, seed=0).fit(M, y, epochs=5, verbose_freq=5)
    expected = M.astype(np.float64) @ model.get_weights(deterministic=True).astype(np.float64)
    for fmt in ("csr", "csc", "coo", "bsr", "lil", "dok"):
        np.testing.assert_allclose(model.predict(M.asformat(fmt)), expected, rtol=1e-12)
    bad = M.todok()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="M must be finite"):
        model.predict(bad)


def test_second_matrix_of_same_shape_and_nnz_gets_its_own_predictions(small):
    M, y = small
    M2 = M.copy()
    M2.data = M2.data * 3.0 + 1.0
    model = SparseCalibrationWeights(n_features=100, seed=0).fit(M, y, epochs=50)
    w = model.get_weights(deterministic=True).astype(np.float64)
    np.testing.assert_allclose(model.predict(M), M @ w, rtol=1e-12)
    np.testing.assert_allclose(model.predict(M2), M2 @ w, rtol=1e-12)
    # The same through fit: training on M2 next uses M2's values, not M's.
    model.fit(M2, y, epochs=1, polish=False)
    expected = M2 @ model.get_weights(deterministic=True).astype(np.float64)
    np.testing.assert_allclose(model.result_.predictions, expected, rtol=1e-12)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        ({"M": np.array([[np.nan] * 100] * 20)}, "M must be finite"),
        ({"M": sp.csr_matrix(np.full((20, 100), np.inf))}, "M must be finite"),
        ({"y": np.full(20, np.nan)}, "targets must be finite"),
        ({"y": np.ones(19)}, r"targets must have shape \(20,\)"),
        ({"M": np.ones((20, 99))}, "M has 99 columns .* n_features=100"),
        ({"lambda_l0": -1.0}, "lambda_l0 must be >= 0"),
        ({"lambda_l2": -1e-3}, "lambda_l2 must be >= 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"loss_type": "l1"}, "unknown loss_type 'l1'; choose one of 'mse', 'relative', 'relative_abs'"),
        ({"verbose_freq": 0}, "verbose_freq must be an integer >= 1"),
    ],
)
def test_bad_fit_input_raises_value_error(small, change, match):
    M, y = small
    args = {"M": M, "y": y, "epochs": 5, **change}
    with pytest.raises(ValueError, match=match):
        SparseCalibrationWeights(n_features=100).fit(**args)


def test_bad_constructor_and_calibrate_input(small):
    M, y = small
    with pytest.raises(ValueError, match="n_features must be an integer >= 1"):
        SparseCalibrationWeights(0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        SparseCalibrationWeights(10, beta=0.0)
    with pytest.raises(ValueError, match="zeta must be > 1"):
        SparseCalibrationWeights(10, zeta=1.0)
    with pytest.raises(ValueError, match="give either seed or key"):
        SparseCalibrationWeights(10, seed=1, key=jax.random.key(1))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        calibrate(M, y, key="zero")
    with pytest.raises(ValueError, match="unknown eval_rule"):
        calibrate(M, y, key=0, eval_rule="mean")
    with pytest.raises(ValueError, match="unknown backend"):
        calibrate(M, y, key=0, backend="torch")
    with pytest.raises(ValueError, match="M must have shape"):
        SparseCalibrationWeights(100).predict(np.ones((3, 7)))


@pytest.mark.parametrize(
    "entry", ["calibrate", "fit", "calibrate_path", "calibrate_classical", "check_targets"]
)
@pytest.mark.parametrize(
    "targets, error, match",
    [
        (["a"] * 20, ValueError, "targets must hold real numbers, got dtype <U1"),
        (np.array([1.0, "b"] * 10, dtype=object), ValueError, "targets must hold real numbers.* such as 'b'"),
        (np.ones(20) + 1j, ValueError, "targets must hold real numbers, got dtype complex128"),
        ([[1.0, 2.0], [3.0]], ValueError, "targets must be a rectangular array"),
        ({"a": 1.0}, TypeError, "targets must be a number or an array .* got dict"),
        (None, TypeError, "targets must be a number or an array .* got NoneType"),
    ],
)
def test_non_numeric_targets_are_named(small, entry, targets, error, match):
    M, _ = small
    call = {
        "calibrate": lambda: calibrate(M, targets, key=0, epochs=1),
        "fit": lambda: SparseCalibrationWeights(100).fit(M, targets, epochs=1),
        "calibrate_path": lambda: l0jax.calibrate_path(M, targets, key=0, holdout=[0], lambdas=[0.1]),
        "calibrate_classical": lambda: l0jax.calibrate_classical(M, targets, np.ones(100)),
        "check_targets": lambda: l0jax.check_targets(M, targets),
    }[entry]
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"init_weights": ["a"] * 100}, ValueError, "init_weights must hold real numbers"),
        ({"init_weights": "1"}, TypeError, "init_weights must be a number or an array"),
        ({"init_weights": np.ones(100) * 1j}, ValueError, "init_weights must hold real numbers"),
        ({"init_keep_prob": ["x"] * 100}, ValueError, "init_keep_prob must hold real numbers"),
        ({"init_keep_prob": "0.5"}, TypeError, "init_keep_prob must be a number or an array"),
        ({"M": [[1.0] * 100] * 19 + [[1.0]]}, ValueError, "M must be a rectangular array"),
        ({"M": np.full((20, 100), "a")}, ValueError, "M must hold real numbers, got dtype <U1"),
        ({"M": np.ones((20, 100), complex)}, ValueError, "M must hold real numbers, got dtype complex128"),
    ],
)
def test_non_numeric_array_arguments_are_named(small, kwargs, error, match):
    M, y = small
    args = {"M": M, "targets": y, "key": 0, "epochs": 1, **kwargs}
    with pytest.raises(error, match=match):
        calibrate(**args)


def test_bfloat16_and_object_matrices_calibrate_as_float32(small):
    import ml_dtypes

    M, y = small
    dense = M.toarray().astype(np.float32)
    reference = calibrate(dense, y, key=0, epochs=3, polish=False).weights
    # The matrix's values are exact in bfloat16 after rounding it once, so compare against that.
    rounded = dense.astype(ml_dtypes.bfloat16)
    from_bf16 = calibrate(rounded, y, key=0, epochs=3, polish=False).weights
    from_f32 = calibrate(rounded.astype(np.float32), y, key=0, epochs=3, polish=False).weights
    np.testing.assert_array_equal(from_bf16, from_f32)
    from_object = calibrate(dense.astype(object), y, key=0, epochs=3, polish=False).weights
    np.testing.assert_array_equal(from_object, reference)


def test_non_finite_loss_stops_with_the_epoch_and_keeps_the_last_finite_state():
    # Plain SGD on huge targets: epoch 1 moves the log weights by 10, epoch 2 by ~2e4, so the weights
    # overflow and the loss of epoch 3 is infinite.
    M, y = np.ones((5, 10)), np.full(5, 1e17)
    for chunk in (100, 1):
        with pytest.raises(NonFiniteLossError, match="became NaN or infinite at epoch 3") as info:
            calibrate(M, y, key=0, epochs=50, use_gates=False, optimizer=optax.sgd(1e-17), log_every=chunk)
        err = info.value
        assert isinstance(err, FloatingPointError) and err.epoch == 3
        assert int(err.state.step) == 1
        lw = np.asarray(err.state.params["log_weight"])
        assert np.all(np.isfinite(lw)) and np.all(lw > 5)  # the state after epoch 1
        assert np.all(np.isfinite(err.history["loss"]))
    # The object keeps the last finite state too.
    model = SparseCalibrationWeights(10, use_gates=False)
    with pytest.raises(NonFiniteLossError):
        model.fit(M, y, epochs=50, optimizer=optax.sgd(1e-17))
    assert int(model.state.step) == 1 and np.all(np.isfinite(model.log_weight))


# -- our behaviours ----------------------------------------------------------------------------


def test_fit_again_continues_bitwise(small):
    M, y = small
    kw = {"lambda_l0": 1e-3, "lr": 0.1, "loss_type": "relative", "polish": False}
    once = SparseCalibrationWeights(100, seed=3).fit(M, y, epochs=250, **kw)
    twice = SparseCalibrationWeights(100, seed=3).fit(M, y, epochs=100, **kw).fit(M, y, epochs=150, **kw)
    assert int(twice.state.step) == 250
    np.testing.assert_array_equal(once.log_weight, twice.log_weight)
    np.testing.assert_array_equal(once.log_alpha, twice.log_alpha)
    # Adam's moments continued too (a restart would differ).
    np.testing.assert_array_equal(
        jax.tree.leaves(once.state.opt_state)[3], jax.tree.leaves(twice.state.opt_state)[3]
    )
    # And through the functional API, with another chunk size.
    first = calibrate(M, y, key=3, epochs=100, log_every=30, **kw)
    cont = calibrate(M, y, key=3, epochs=150, log_every=70, state=first.state, **kw)
    np.testing.assert_array_equal(cont.weights, once.get_weights(True))
    np.testing.assert_array_equal(cont.history["epoch"], [170, 240, 250])


def test_changing_lambdas_lr_temperature_or_epochs_does_not_recompile(small):
    M, y = small
    calibrate(M, y, key=0, epochs=20, log_every=10)
    chunks, polishes = engine.run_chunk._cache_size(), engine.finish_run._cache_size()
    for kw in (
        {"lambda_l0": 0.5},
        {"lambda_l2": 1e-3},
        {"lr": 0.3},
        {"temperature": 0.4},
        {"epochs": 37},
        {"log_every": 7, "polish_epochs": 13},
        {"gamma": -0.2, "zeta": 1.2},
        {"loss_type": "relative"},
    ):
        calibrate(M, y, key=1, **{"epochs": 20, **kw})
    assert engine.run_chunk._cache_size() == chunks
    assert engine.finish_run._cache_size() == polishes


def test_beta_is_a_deprecated_alias_of_temperature_in_calibrate(small):
    M, y = small
    kw = dict(key=0, epochs=30, log_every=10, lambda_l0=1e-3)
    new = calibrate(M, y, temperature=0.4, **kw)
    with pytest.warns(
        DeprecationWarning, match=r"calibrate: beta= is deprecated; pass temperature= instead"
    ) as record:
        old = calibrate(M, y, beta=0.4, **kw)
    assert record[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(old.weights, new.weights)
    np.testing.assert_array_equal(old.history["loss"], new.history["loss"])
    # Both ran at 0.4, not at the default 2/3 (the temperature is recorded in every history row).
    np.testing.assert_array_equal(old.history["temperature"], np.float32(0.4))
    with pytest.raises(ValueError, match="give temperature or its deprecated alias beta, not both"):
        calibrate(M, y, temperature=0.5, beta=0.4, **kw)
    # temperature=None, the default before the rename, is still the default.
    np.testing.assert_array_equal(
        calibrate(M, y, temperature=None, **kw).weights, calibrate(M, y, **kw).weights
    )


def test_sparse_calibration_weights_takes_beta_or_temperature(small):
    M, y = small
    kw = dict(lambda_l0=1e-3, epochs=30, verbose_freq=10)
    by_beta = SparseCalibrationWeights(100, 0.4, seed=0).fit(M, y, **kw)  # l0-python's positional beta
    by_name = SparseCalibrationWeights(100, temperature=0.4, seed=0).fit(M, y, **kw)
    assert by_beta.beta == by_beta.temperature == by_name.beta == pytest.approx(0.4)
    np.testing.assert_array_equal(by_beta.get_weights(True), by_name.get_weights(True))
    np.testing.assert_array_equal(by_name.history_["temperature"], np.float32(0.4))
    # Equal to the functional API at the same temperature.
    functional = calibrate(M, y, key=0, temperature=0.4, lambda_l0=1e-3, epochs=30, log_every=10)
    np.testing.assert_array_equal(by_name.get_weights(True), functional.weights)
    with pytest.raises(ValueError, match="give beta .* or temperature, not both"):
        SparseCalibrationWeights(100, beta=0.4, temperature=0.4)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SparseCalibrationWeights(100, temperature=0.0)


def test_polished_weights_hit_targets_at_least_as_well_as_sampled_ones():
    M, rng = _random(50, 200, 0.3, 5)
    y = M @ rng.lognormal(0, 1, 200)
    kw = {"lambda_l0": 1e-3, "lr": 0.1, "epochs": 500, "loss_type": "relative"}
    model = SparseCalibrationWeights(200, seed=0).fit(M, y, **kw)
    raw = SparseCalibrationWeights(200, seed=0).fit(M, y, polish=False, **kw)

    def loss(w):
        return np.sum(((M @ w.astype(np.float64) - y) / (y + 1)) ** 2)

    sampled = np.mean([loss(raw.get_weights(deterministic=False)) for _ in range(100)])
    polished, unpolished = loss(model.get_weights(True)), loss(raw.get_weights(True))
    assert polished <= sampled and polished <= unpolished
    # The polish keeps the active set the gates chose and only refits the active weights.
    np.testing.assert_array_equal(model.get_weights(True) > 0, raw.get_weights(True) > 0)
    assert model.result_.polish["end"] <= model.result_.polish["start"]
    np.testing.assert_array_equal(model.log_alpha, raw.log_alpha)


def test_calibrate_result_fields(small):
    M, y = small
    res = calibrate(M, y, key=0, lambda_l0=1e-3, lr=0.1, epochs=250, log_every=100, loss_type="relative")
    assert isinstance(res, CalibrationResult)
    np.testing.assert_array_equal(res.history["epoch"], [100, 200, 250])
    np.testing.assert_array_equal(res.active, np.flatnonzero(res.weights > 0))
    np.testing.assert_array_equal(res.weights == 0, res.gates == 0)
    np.testing.assert_allclose(res.predictions, M @ res.weights.astype(np.float64), rtol=1e-12)
    np.testing.assert_allclose(res.relative_errors, np.abs(res.predictions - y) / (np.abs(y) + 1))
    assert res.sparsity == pytest.approx(1 - res.active_count / 100)
    assert np.all(res.history["temperature"] == np.float32(2 / 3))
    assert "households active" in repr(res)


def test_use_gates_false_fits_plain_positive_weights(small):
    M, y = small
    model = SparseCalibrationWeights(100, use_gates=False, seed=0).fit(
        M, y, lr=0.1, epochs=300, loss_type="relative"
    )
    assert model.log_alpha is None and "log_alpha" not in model.state.params
    w = model.get_weights(True)
    np.testing.assert_allclose(w, np.exp(model.log_weight), rtol=1e-6)
    np.testing.assert_array_equal(model.get_weights(False), w)
    assert model.get_sparsity() == 0.0 and model.get_l0_penalty() == 0.0
    assert model.result_.polish is None
    assert np.mean(_rel_err(y, model.predict(M))) < 0.05


def test_relative_abs_handles_negative_targets(small):
    M, _ = small
    # Targets of any sign: a fixed signed matrix makes negative totals reachable.
    signed = M.copy()
    signed.data = signed.data * np.where(np.arange(signed.nnz) % 2, 1.0, -1.0)
    w_true = np.random.default_rng(2).uniform(0.5, 2.0, 100)
    y = signed @ w_true
    assert (y < 0).any() and (y > 0).any()
    res = calibrate(signed, y, key=0, lambda_l0=1e-6, lr=0.05, epochs=1500, loss_type="relative_abs")
    assert np.mean(res.relative_errors) < 0.05
    with (
        pytest.raises(ValueError, match="relative_abs"),
        pytest.warns(l0jax.CalibrationWarning, match="negative"),
    ):
        calibrate(signed, np.full(20, -1.0), key=0, loss_type="relative")


def test_backends_agree(small):
    M, y = small
    kw = {"lambda_l0": 1e-3, "lr": 0.1, "epochs": 30, "loss_type": "relative", "polish": False}
    results = {b: calibrate(M, y, key=0, backend=b, **kw) for b in ("dense", "sparse", "scipy")}
    for b in ("sparse", "scipy"):
        np.testing.assert_allclose(results[b].weights, results["dense"].weights, rtol=1e-3, atol=1e-5)


def test_custom_optimizer_and_temperature_schedule(small):
    M, y = small
    schedule = l0jax.temperature_schedule(2.0, 0.5, 200)
    res = calibrate(
        M,
        y,
        key=0,
        epochs=200,
        log_every=50,
        optimizer=optax.sgd(0.05),
        temperature=schedule,
        lambda_l0=1e-3,
        loss_type="relative",
    )
    np.testing.assert_allclose(
        res.history["temperature"], [schedule(k) for k in (50, 100, 150, 200)], rtol=1e-6
    )


def test_verbose_shows_a_progress_bar(small, capsys):
    M, y = small
    SparseCalibrationWeights(100, seed=0).fit(M, y, epochs=200, verbose=True, verbose_freq=100)
    err = capsys.readouterr().err
    assert "200/200" in err and "active=" in err and "max_err=" in err and "mean_err=" in err


def test_continuing_needs_the_same_households_gates_and_optimizer(small):
    M, y = small
    res = calibrate(M, y, key=0, epochs=10, polish=False)
    with pytest.raises(ValueError, match="state was made with another optimizer"):
        calibrate(M, y, key=0, epochs=10, state=res.state, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="state was made with use_gates=True"):
        calibrate(M, y, key=0, epochs=10, state=res.state, use_gates=False)
    with pytest.raises(ValueError, match="state is for 100 households but M has 50 columns"):
        calibrate(M[:, :50], y, key=0, epochs=10, state=res.state)
    with pytest.raises(ValueError, match="state must be a CalibrationState"):
        calibrate(M, y, key=0, epochs=10, state={"params": None})


def test_matrix_inputs_of_every_kind_give_the_same_fit(small):
    M, y = small
    kw = {"lambda_l0": 1e-3, "lr": 0.1, "epochs": 50, "loss_type": "relative", "backend": "dense"}
    ref = calibrate(M, y, key=0, **kw).weights
    for given in (
        sp.csr_array(M),
        M.tocoo(),
        M.tocsc(),
        M.toarray(),
        jax.numpy.asarray(M.toarray()),
        l0jax._src.operators.as_operator(M, backend="dense"),
    ):
        np.testing.assert_array_equal(calibrate(given, y, key=0, **kw).weights, ref)


def test_nested_lists_are_accepted_as_matrix_and_targets():
    M = [[1.0, 2.0, 0.5], [0.5, 1.0, 2.0]]
    res = calibrate(M, [3.0, 3.0], key=0, epochs=300, lr=0.05, lambda_l0=0.0, loss_type="relative")
    np.testing.assert_allclose(res.predictions, [3.0, 3.0], rtol=1e-3)
    np.testing.assert_allclose(res.predictions, np.asarray(M) @ res.weights, rtol=1e-5)
