"""SparseL0Linear: l0-python's test_sparse.py behaviours at its thresholds, its README headline,
input handling (dense, scipy sparse matrices and arrays), reproducibility and no recompilation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import sparse as sp
from sklearn.linear_model import LinearRegression

import l0jax
from l0jax._src.regression import objective, train


def recovery_problem(seed):
    """l0-python's test_sparse_data_recovery data: n=1000, p=100, 5 true coefficients, 95% zeros in X."""
    rng = np.random.default_rng(seed)
    n, p = 1000, 100
    support = rng.choice(p, 5, replace=False)
    b = np.zeros(p)
    b[support] = rng.choice([-3, -2, -1, 1, 2, 3], 5)
    X = rng.standard_normal((n, p)) * 0.5
    mask = rng.random((n, p)) < 0.95
    X[mask] = 0
    for i in range(0, p - 1, 2):  # pairwise correlation where both entries are present
        both = ~(mask[:, i] | mask[:, i + 1])
        X[both, i + 1] += 0.3 * X[both, i]
    y = 30 + X @ b + 1.5 * rng.standard_normal(n)
    return sp.csr_matrix(X), y, support


@pytest.mark.parametrize("seed", [12543, 0, 1])
def test_recovers_sparse_coefficients_at_l0_python_thresholds(seed):
    X, y, support = recovery_problem(seed)
    ols = LinearRegression().fit(X, y)
    ols_mse = np.mean((y - ols.predict(X)) ** 2)
    for model_seed in range(10):  # an optimisation outcome: it must hold for every seed
        model = l0jax.SparseL0Linear(n_features=100, fit_intercept=True, init_keep_prob=0.5, seed=model_seed)
        model.fit(X, y, lambda_reg=0.01 * ols_mse, lr=0.01, epochs=2000)

        selected = model.get_selected_features()
        hits = len(set(selected.tolist()) & set(support.tolist()))
        assert hits / 5 >= 0.6, model_seed  # recall
        assert len(selected) > 0 and hits / len(selected) >= 0.5, model_seed  # precision
        assert model.get_sparsity() >= 0.7
        mse = float(np.mean((y - np.asarray(model.predict(X))) ** 2))
        assert mse < 1.5 * ols_mse


def headline_data():
    """l0-python's README example: y = 30 + x1 - 2 x3 + N(0, 1.5^2), four features correlated at 0.5."""
    rng = np.random.default_rng(12543)
    cov = np.full((4, 4), 0.5)
    np.fill_diagonal(cov, 1.0)
    X = rng.multivariate_normal(np.zeros(4), cov, size=500)
    y = 30 + X @ np.array([1.0, 0.0, -2.0, 0.0]) + 1.5 * rng.standard_normal(500)
    return X, y


def test_readme_headline_gates_are_1_0_1_0():
    X, y = headline_data()
    design = np.c_[np.ones(500), X[:, [0, 2]]]
    ols = np.linalg.lstsq(design, y, rcond=None)[0]
    for seed in range(10):
        model = l0jax.SparseL0Linear(n_features=4, seed=seed).fit(X, y, lambda_reg=0.2, lr=0.01, epochs=5000)
        np.testing.assert_array_equal(np.asarray(model.get_deterministic_gates()), [1.0, 0.0, 1.0, 0.0])
        # The refined fit is least squares on x1, x3 and the intercept (to float32 rounding).
        np.testing.assert_allclose(np.r_[model.intercept_, model.coef_[[0, 2]]], ols, rtol=1e-4)
        assert model.coef_[1] == 0.0 and model.coef_[3] == 0.0


def test_no_intercept():
    rng = np.random.default_rng(42)
    n, p = 100, 20
    X = rng.standard_normal((n, p))
    X[rng.random((n, p)) < 0.8] = 0
    b = np.zeros(p)
    b[:3] = [2, -3, 1]
    y = X @ b + 0.1 * rng.standard_normal(n)
    for seed in range(10):
        model = l0jax.SparseL0Linear(n_features=p, fit_intercept=False, init_keep_prob=0.5, seed=seed)
        assert model.bias is None
        model.fit(sp.csr_matrix(X), y, epochs=500)
        assert model.bias is None and model.intercept_ == 0.0
        assert {0, 1, 2} <= set(model.get_selected_features().tolist()), seed
        np.testing.assert_allclose(model.coef_[:3], [2, -3, 1], atol=0.2)
        # No offset: a row of zeros predicts exactly 0, and predictions are X @ coef_.
        assert float(model.predict(np.zeros((1, p)))[0]) == 0.0
        np.testing.assert_allclose(np.asarray(model.predict(X)), X @ model.coef_, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def small():
    """A 120 x 12 problem shared by the quick tests (one compile)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 12))
    X[rng.random((120, 12)) < 0.5] = 0
    y = 1.0 + X[:, 0] * 2 - X[:, 3] + 0.1 * rng.standard_normal(120)
    return X, y


def test_same_seed_gives_bitwise_same_fit_and_other_seeds_differ(small):
    X, y = small
    fits = [l0jax.SparseL0Linear(12, seed=s).fit(X, y, epochs=300) for s in (3, 3, 4)]
    for name in ("weight", "log_alpha", "bias"):
        np.testing.assert_array_equal(np.asarray(getattr(fits[0], name)), np.asarray(getattr(fits[1], name)))
    # The stochastic phase depends on the seed; the refined support does not (both reach {0, 3}).
    raw = [l0jax.SparseL0Linear(12, seed=s).fit(X, y, epochs=300, refine=False) for s in (3, 4)]
    assert not np.array_equal(np.asarray(raw[0].weight), np.asarray(raw[1].weight))
    assert fits[0].get_selected_features().tolist() == fits[2].get_selected_features().tolist() == [0, 3]
    # A JAX key works in place of the seed: key=jax.random.key(3) is seed=3.
    keyed = l0jax.SparseL0Linear(12, key=jax.random.key(3)).fit(X, y, epochs=300)
    np.testing.assert_array_equal(np.asarray(keyed.weight), np.asarray(fits[0].weight))
    # Refitting starts from the seed again (l0-python keeps log_alpha from the previous fit).
    fits[0].fit(X, y, epochs=300)
    np.testing.assert_array_equal(np.asarray(fits[0].log_alpha), np.asarray(fits[1].log_alpha))


def test_history_prefix_does_not_depend_on_epoch_count(small):
    """Epoch t's noise is fold_in(key, t) and masked epochs are skipped, so 150 epochs are the
    first 150 of 250 exactly (the same compiled chunk serves both).
    """
    X, y = small
    short = l0jax.SparseL0Linear(12).fit(X, y, epochs=150)
    long = l0jax.SparseL0Linear(12).fit(X, y, epochs=250)
    assert short.history_["loss"].shape == (150,) and long.history_["loss"].shape == (250,)
    for name in ("loss", "data_loss", "l0", "n_active"):
        np.testing.assert_array_equal(short.history_[name], long.history_[name][:150])


def test_lambda_lr_and_epochs_do_not_recompile(small):
    X, y = small
    l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=0.01, lr=0.01, epochs=100)
    before = train._run_single_chunk._cache_size()
    for lam, lr, epochs in [(0.5, 0.02, 230), (0.0, 0.1, 7)]:
        l0jax.SparseL0Linear(12, beta=0.5, seed=9).fit(X, y, lambda_reg=lam, lr=lr, epochs=epochs)
    assert train._run_single_chunk._cache_size() == before


def test_history_matches_the_objective(small):
    """The recorded l0 is the expected L0 of the parameters before each step: at step 0 that is
    sum(prob_nonzero(log_alpha_init)), the constructor's log_alpha.
    """
    X, y = small
    model = l0jax.SparseL0Linear(12, init_keep_prob=0.8, beta=0.5)
    expected = float(l0jax.l0_penalty(model.log_alpha, 0.5))
    np.testing.assert_allclose(float(model.get_l0_penalty()), expected, rtol=1e-6)
    model.fit(X, y, lambda_reg=0.3, epochs=20)
    np.testing.assert_allclose(model.history_["l0"][0], expected, rtol=1e-6)
    h = model.history_
    np.testing.assert_allclose(h["loss"], h["data_loss"] + 0.3 * h["l0"], rtol=1e-5)
    # The history is the stochastic phase's: its last count is the support the refinement started from.
    np.testing.assert_array_equal(model.history_["n_active"][-1], len(model.refinement_["support_before"]))


def test_sparse_formats_backends_and_dense_give_the_same_fit(small):
    X, y = small
    dense = l0jax.SparseL0Linear(12).fit(X, y, epochs=100)
    for convert in (sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_array, jnp.asarray):
        model = l0jax.SparseL0Linear(12).fit(convert(X), y, epochs=100)
        np.testing.assert_allclose(np.asarray(model.weight), np.asarray(dense.weight), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(model.predict(convert(X))), np.asarray(dense.predict(X)), rtol=1e-5, atol=1e-5
        )
    # The host (scipy CSR) operator: gradients through its custom_vjp callback give the same fit.
    model = l0jax.SparseL0Linear(12, backend="scipy").fit(sp.csr_array(X), y, epochs=100)
    np.testing.assert_allclose(np.asarray(model.weight), np.asarray(dense.weight), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(model.predict(sp.csr_array(X))), np.asarray(dense.predict(X)), rtol=1e-4, atol=1e-4
    )


def test_predict_uses_the_matrix_it_is_given(small):
    """l0-python caches its converted matrix by (shape, nnz): predicting on new data of the same
    shape and nnz returns the old data's predictions. Here predictions follow the input.
    """
    X, y = small
    model = l0jax.SparseL0Linear(12).fit(sp.csr_matrix(X), y, epochs=200)
    X2 = sp.csr_matrix(X)
    X2.data = X2.data[::-1].copy()  # same shape and nnz, different values
    expected = X2 @ model.coef_ + model.intercept_
    np.testing.assert_allclose(np.asarray(model.predict(X2)), expected, rtol=1e-5, atol=1e-4)
    assert not np.allclose(expected, X @ model.coef_ + model.intercept_)


def test_deterministic_and_stochastic_predictions(small):
    X, y = small
    # The stochastic phase's model (refinement saturates the gates, so sampled gates rarely differ).
    model = l0jax.SparseL0Linear(12).fit(X, y, epochs=100, refine=False)
    np.testing.assert_array_equal(np.asarray(model.predict(X)), np.asarray(model.predict(X)))
    np.testing.assert_array_equal(
        np.asarray(model.forward(X, deterministic=True)), np.asarray(model.predict(X))
    )
    a = model.forward(X, key=jax.random.key(1))
    b = model.forward(X, key=jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(model.forward(X, key=jax.random.key(1))))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="key="):
        model.forward(X)


def test_coefficients_and_selected_features(small):
    X, y = small
    model = l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=0.05, epochs=800)
    gates = np.asarray(model.get_deterministic_gates())
    np.testing.assert_allclose(model.coef_, np.asarray(model.weight) * gates, rtol=1e-6)
    np.testing.assert_array_equal(model.get_selected_features(), np.flatnonzero(gates > 0.01))
    np.testing.assert_array_equal(model.get_selected_features(0.5), np.flatnonzero(gates > 0.5))
    coef = model.get_coefficients(threshold=0.01)
    np.testing.assert_array_equal(coef != 0, gates > 0.01)
    assert model.get_sparsity() == pytest.approx(np.mean(gates < 0.01))
    for seed in range(10):  # the selection is an optimisation outcome: every seed
        fitted = l0jax.SparseL0Linear(12, seed=seed).fit(X, y, lambda_reg=0.05, epochs=800)
        assert set(fitted.get_selected_features().tolist()) == {0, 3}, seed


def test_sparsity_is_the_complement_of_the_selection(monkeypatch):
    model = l0jax.SparseL0Linear(4)
    gates = jnp.array([0.01, 0.5, 0.0, 0.02], jnp.float32)  # 0.01 exactly: not selected, so sparse
    monkeypatch.setattr(model, "get_deterministic_gates", lambda: gates)
    np.testing.assert_array_equal(model.get_selected_features(), [1, 3])
    assert model.get_sparsity() == 0.5


def test_verbose_prints_l0_python_progress_lines(small, capsys):
    X, y = small
    model = l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=0.1, epochs=250, verbose=True, verbose_freq=60)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch   60", "Epoch  120", "Epoch  180", "Epoch  240"]
    h = model.history_
    assert lines[1] == (
        f"Epoch  120: loss={h['loss'][119]:.4f}, mse={h['data_loss'][119]:.4f}, "
        f"l0={h['l0'][119]:.2f}, active={h['n_active'][119]}"
    )


def test_lambda_l0_alias_and_column_targets(small):
    X, y = small
    a = l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=0.2, epochs=50)
    b = l0jax.SparseL0Linear(12).fit(X, y[:, None], lambda_l0=0.2, epochs=50)
    np.testing.assert_array_equal(np.asarray(a.weight), np.asarray(b.weight))
    with pytest.raises(ValueError, match="not both"):
        l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=0.1, lambda_l0=0.1)


def test_beta_and_temperature_name_the_same_argument(small):
    X, y = small
    by_beta = l0jax.SparseL0Linear(12, beta=0.5, seed=9).fit(X, y, lambda_l0=0.2, epochs=50)
    by_name = l0jax.SparseL0Linear(12, temperature=0.5, seed=9).fit(X, y, lambda_l0=0.2, epochs=50)
    assert by_beta.beta == by_beta.temperature == by_name.beta == by_name.temperature == 0.5
    for name in ("weight", "log_alpha", "bias"):
        np.testing.assert_array_equal(np.asarray(by_beta.params[name]), np.asarray(by_name.params[name]))
    np.testing.assert_array_equal(by_beta.history_["loss"], by_name.history_["loss"])
    with pytest.raises(ValueError, match=r"give beta \(l0-python's name\) or temperature, not both"):
        l0jax.SparseL0Linear(12, beta=0.5, temperature=0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        l0jax.SparseL0Logistic(12, temperature=0.0)
    # A bad L0 strength is named as the caller named it.
    with pytest.raises(ValueError, match="lambda_l0 must be >= 0"):
        l0jax.SparseL0Linear(12).fit(X, y, lambda_l0=-1.0)
    with pytest.raises(ValueError, match="lambda_reg must be >= 0"):
        l0jax.SparseL0Linear(12).fit(X, y, lambda_reg=-1.0)


def test_extreme_log_alpha_stays_finite():
    model = l0jax.SparseL0Linear(12)
    for value in (1e3, -1e3):
        model._set_params({**model.params, "log_alpha": jnp.full((12,), value)})
        np.testing.assert_array_equal(np.asarray(model.get_deterministic_gates()), 1.0 if value > 0 else 0.0)
        assert float(model.get_l0_penalty()) == (12.0 if value > 0 else 0.0)


def test_data_losses_match_closed_forms():
    y = jnp.array([0.0, 1.0, 1.0])
    eta = jnp.array([-1.0, 0.5, 20.0])
    p = 1 / (1 + np.exp(-np.asarray(eta, np.float64)))
    bce = -np.mean(np.asarray(y) * np.log(p) + (1 - np.asarray(y)) * np.log1p(-p))
    np.testing.assert_allclose(float(objective.data_loss(y, eta, "logistic")), bce, rtol=1e-6)
    mse = np.mean((y - eta) ** 2)
    np.testing.assert_allclose(float(objective.data_loss(y, eta, "linear")), mse, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_features=0), "n_features"),
        (dict(n_features=3, beta=0.0), "beta"),
        (dict(n_features=3, gamma=0.1), "gamma"),
        (dict(n_features=3, zeta=0.9), "zeta"),
        (dict(n_features=3, init_keep_prob=1.0), "init_keep_prob"),
        (dict(n_features=3, eval_rule="mean"), "eval_rule"),
        (dict(n_features=3, seed=1.5), "seed"),
        (dict(n_features=3, fit_intercept="yes"), "fit_intercept"),
        (dict(n_features=3, device="quantum"), "device"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        l0jax.SparseL0Linear(**kwargs)


def test_bad_fit_and_predict_inputs():
    X = np.ones((5, 3))
    y = np.arange(5.0)
    model = l0jax.SparseL0Linear(3)
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(X)
    cases = [
        (dict(X_sparse=np.ones((5, 4)), y=y), "n_features=3"),
        (dict(X_sparse=np.ones(5), y=y), "2-D"),
        (dict(X_sparse=np.ones((0, 3)), y=y[:0]), "empty"),
        (dict(X_sparse=np.where(np.eye(5, 3) > 0, np.nan, 1.0), y=y), "X must be finite"),
        (dict(X_sparse=sp.csr_matrix(np.where(np.eye(5, 3) > 0, np.inf, 0.0)), y=y), "X must be finite"),
        (dict(X_sparse=X, y=y[:4]), r"shape \(5,\)"),
        (dict(X_sparse=X, y=np.r_[y[:4], np.nan]), "y must be finite"),
        (dict(X_sparse=X, y=y, lambda_reg=-1.0), "lambda_reg"),
        (dict(X_sparse=X, y=y, lr=0.0), "lr"),
        (dict(X_sparse=X, y=y, epochs=0), "epochs"),
        (dict(X_sparse=X, y=y, verbose_freq=0), "verbose_freq"),
        (dict(X_sparse=np.array([["a"] * 3] * 5), y=y), "real numbers"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            model.fit(**kwargs)


def test_float64_data_fits_in_float64_when_enabled(small):
    X, y = small
    with jax.enable_x64(True):
        model = l0jax.SparseL0Linear(12).fit(X, y, epochs=100)
        assert model.weight.dtype == jnp.float64 and model.predict(X).dtype == jnp.float64
        # Predictions are X @ coef_ + intercept_ to float64 precision (float32 would give ~1e-6).
        np.testing.assert_allclose(
            np.asarray(model.predict(X)), X @ model.coef_ + model.intercept_, rtol=1e-12, atol=1e-12
        )


def test_device_argument():
    cpu = jax.devices("cpu")[0]
    assert l0jax.SparseL0Linear(3, device="cpu").device == cpu
    assert l0jax.SparseL0Linear(3, device=cpu).device == cpu
    model = l0jax.SparseL0Linear(3, device="cpu").fit(np.eye(3), np.ones(3), epochs=5)
    assert model.weight.devices() == {cpu}
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="no gpu backend"):
            l0jax.SparseL0Linear(3, device="cuda")
