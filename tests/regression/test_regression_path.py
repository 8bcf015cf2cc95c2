"""l0_path and select_lambda: a 20-lambda path compiles once, sparsity grows with lambda, entries
equal single fits, and the selection rules.
"""

import numpy as np
import pytest
from scipy import sparse as sp

import l0jax
from l0jax._src.regression import train


@pytest.fixture(scope="module")
def data():
    """150 x 15 with 4 true features; a train and a validation split from the same model."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 15))
    b = np.zeros(15)
    b[[1, 4, 8, 11]] = [1.5, -2.0, 1.0, 0.7]
    y = 2.0 + X @ b + 0.5 * rng.standard_normal(300)
    return X[:150], y[:150], X[150:], y[150:]


LAMBDAS = np.geomspace(1e-3, 3.0, 20)


@pytest.fixture(scope="module")
def traced_path(data):
    X, y, Xv, yv = data
    before = train._run_path_chunk._cache_size()
    result = l0jax.l0_path(X, y, LAMBDAS, X_val=Xv, y_val=yv, epochs=1000, lr=0.02)
    return result, train._run_path_chunk._cache_size() - before


@pytest.fixture
def path(traced_path):
    return traced_path[0]


def test_path_of_20_lambdas_compiles_once_and_reruns_without_compiling(data, traced_path):
    X, y, Xv, yv = data
    assert traced_path[1] == 1
    before = train._run_path_chunk._cache_size()
    other = l0jax.l0_path(
        X, y, LAMBDAS[::-1] * 0.5, X_val=Xv, y_val=yv, epochs=130, lr=0.05, temperature=0.5, seed=4
    )
    assert train._run_path_chunk._cache_size() == before
    assert other.history["loss"].shape == (20, 130)


def test_beta_is_a_deprecated_alias_of_temperature_in_l0_path(data):
    X, y, _, _ = data
    kw = dict(epochs=60, lr=0.05, seed=4)
    new = l0jax.l0_path(X, y, LAMBDAS, temperature=0.5, **kw)
    with pytest.warns(
        DeprecationWarning, match="l0_path: beta= is deprecated; pass temperature= instead"
    ) as rec:
        old = l0jax.l0_path(X, y, LAMBDAS, beta=0.5, **kw)
    assert rec[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(old.coef, new.coef)
    np.testing.assert_array_equal(old.history["loss"], new.history["loss"])
    # The path's models carry the temperature (not the default 2/3).
    assert old.model(0).temperature == new.model(0).temperature == 0.5
    with pytest.raises(ValueError, match="give temperature or its deprecated alias beta, not both"):
        l0jax.l0_path(X, y, LAMBDAS, temperature=0.5, beta=0.5, **kw)


def test_every_seed_keeps_the_true_features_at_the_validated_lambda(data):
    """Optimisation outcomes (monotone counts, the true support at the best lambda) for seeds 0-9."""
    X, y, Xv, yv = data
    for seed in range(10):
        path = l0jax.l0_path(X, y, LAMBDAS, X_val=Xv, y_val=yv, epochs=1000, lr=0.02, seed=seed)
        assert np.all(np.diff(path.n_active) <= 0), (seed, path.n_active)
        best = l0jax.select_lambda(path)
        assert {1, 4, 8, 11} <= set(np.flatnonzero(path.gates[best] > 0.01).tolist()), seed


def test_active_counts_fall_as_lambda_grows(path):
    assert path.n_active.shape == (20,)
    assert np.all(np.diff(path.n_active) <= 0), path.n_active
    assert path.n_active[0] >= 4 and path.n_active[-1] < path.n_active[0]
    np.testing.assert_array_equal(path.n_active, np.sum(path.gates > 0.01, axis=1))
    np.testing.assert_allclose(path.coef, path._params["weight"] * path.gates, rtol=1e-6)
    # Training loss with deterministic gates rises as features are dropped.
    assert path.train_loss[-1] > path.train_loss[0]


def test_losses_are_the_models_losses(data, path):
    X, y, Xv, yv = data
    for i in (0, 9, 19):
        model = path.model(i)
        val_mse = np.mean((yv - np.asarray(model.predict(Xv))) ** 2)
        train_mse = np.mean((y - np.asarray(model.predict(X))) ** 2)
        np.testing.assert_allclose(path.val_loss[i], val_mse, rtol=1e-4)
        np.testing.assert_allclose(path.train_loss[i], train_mse, rtol=1e-4)
        np.testing.assert_allclose(model.coef_, path.coef[i], rtol=1e-6)
        assert model.intercept_ == pytest.approx(path.intercept[i])


def test_path_entries_equal_single_fits():
    # The shape of test_regression.py's `small` data, so the single fits reuse its compiled loop.
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 12))
    y = X[:, 0] - 0.5 * X[:, 5] + 0.3 * rng.standard_normal(120)
    lambdas = np.array([0.01, 0.3])
    path = l0jax.l0_path(X, y, lambdas, epochs=200, lr=0.02, seed=5)
    for i, lam in enumerate(lambdas):
        single = l0jax.SparseL0Linear(12, seed=5).fit(X, y, lambda_reg=lam, lr=0.02, epochs=200)
        np.testing.assert_allclose(path.coef[i], single.coef_, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(path.history["loss"][i], single.history_["loss"], rtol=1e-4)


@pytest.mark.slow
def test_path_through_the_host_operator_equals_the_dense_path():
    """The vmapped path through the scipy CSR operator: one host callback per epoch for all lambdas."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 12))
    X[rng.random((120, 12)) < 0.7] = 0
    y = X[:, 0] - 0.5 * X[:, 5] + 0.3 * rng.standard_normal(120)
    lambdas = np.array([0.01, 0.3])
    dense = l0jax.l0_path(X, y, lambdas, epochs=200, lr=0.02, seed=5, backend="dense")
    host = l0jax.l0_path(sp.csr_matrix(X), y, lambdas, epochs=200, lr=0.02, seed=5, backend="scipy")
    np.testing.assert_allclose(host.coef, dense.coef, rtol=1e-4, atol=1e-4)


def test_select_lambda_by_validation_and_by_budget(path):
    best = l0jax.select_lambda(path)
    # The lowest validation loss; refined supports repeat along the path, and ties go to the larger lambda.
    assert path.val_loss[best] == path.val_loss.min()
    assert path.lambdas[best] == path.lambdas[path.val_loss == path.val_loss.min()].max()
    # The true model has 4 features; the validation loss is lowest at a path point that keeps them.
    assert {1, 4, 8, 11} <= set(np.flatnonzero(path.gates[best] > 0.01).tolist())
    two = l0jax.select_lambda(path, n_features=2)
    assert path.n_active[two] <= 2
    allowed = np.flatnonzero(path.n_active <= 2)
    assert path.val_loss[two] == path.val_loss[allowed].min()


def synthetic_path(n_active, train_loss, val_loss=None):
    k = len(n_active)
    return l0jax.L0Path(
        lambdas=np.arange(1.0, k + 1),
        coef=np.zeros((k, 1)),
        intercept=np.zeros(k),
        gates=np.zeros((k, 1)),
        n_active=np.asarray(n_active),
        train_loss=np.asarray(train_loss, float),
        val_loss=None if val_loss is None else np.asarray(val_loss, float),
        history={},
        kind="linear",
        _params={},
        _settings={},
    )


def test_select_lambda_rules():
    p = synthetic_path([5, 4, 3, 3, 1], [1.0, 2.0, 3.0, 3.0, 9.0], [4.0, 2.0, 2.0, 5.0, 3.0])
    assert l0jax.select_lambda(p) == 2  # tie on validation loss: the larger lambda
    assert l0jax.select_lambda(p, n_features=3) == 2
    assert l0jax.select_lambda(p, n_features=1) == 4
    no_val = synthetic_path([5, 4, 3, 3, 1], [1.0, 2.0, 3.0, 3.0, 9.0])
    assert l0jax.select_lambda(no_val, n_features=4) == 1
    assert l0jax.select_lambda(no_val, n_features=3) == 3  # tie on training loss: the larger lambda
    with pytest.raises(ValueError, match="X_val"):
        l0jax.select_lambda(no_val)
    with pytest.raises(ValueError, match="fewest is 1"):
        l0jax.select_lambda(no_val, n_features=0)
    with pytest.raises(ValueError, match="n_features"):
        l0jax.select_lambda(no_val, n_features=-1)
    with pytest.raises(ValueError, match="L0Path"):
        l0jax.select_lambda({"n_active": [1]}, n_features=1)


def test_bad_path_inputs(data, path):
    X, y, Xv, yv = data
    cases = [
        (dict(lambdas=[]), "non-empty"),
        (dict(lambdas=["a"]), "numbers"),
        (dict(lambdas=[[0.1]]), "1-D"),
        (dict(lambdas=[0.1, -1.0]), "lambdas"),
        (dict(lambdas=[0.1, np.nan]), "lambdas must be finite"),
        (dict(lambdas=[0.1], X_val=Xv), "both X_val and y_val"),
        (dict(lambdas=[0.1], X_val=Xv[:, :3], y_val=yv), "X_val has 3 columns"),
        (dict(lambdas=[0.1], X_val=Xv, y_val=yv[:3]), "y_val must have shape"),
        (dict(lambdas=[0.1], kind="poisson"), "kind"),
        (dict(lambdas=[0.1], epochs=0), "epochs"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            l0jax.l0_path(X, y, **kwargs)
    with pytest.raises(ValueError, match="index"):
        path.model(20)
