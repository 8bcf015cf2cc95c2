"""SparseL0Logistic: breast-cancer feature selection against full logistic regression, labels,
probabilities and input checks.
"""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import l0jax


@pytest.mark.slow
def test_breast_cancer_10_features_within_3_points_of_full_logistic_regression():
    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    test, val, train = order[:170], order[170:270], order[270:]
    mean, std = X[train].mean(0), X[train].std(0)
    Xs = (X - mean) / std
    full = LogisticRegression(max_iter=5000).fit(Xs[train], y[train])
    full_accuracy = full.score(Xs[test], y[test])
    assert full_accuracy > 0.95  # sanity: the reference is the usual ~97-98%

    for seed in range(10):  # accuracy is an optimisation outcome: every seed (slow: 10 paths)
        path = l0jax.l0_path(
            Xs[train],
            y[train],
            np.geomspace(1e-3, 0.1, 20),
            kind="logistic",
            X_val=Xs[val],
            y_val=y[val],
            epochs=2000,
            lr=0.05,
            seed=seed,
        )
        # (No monotonicity check of n_active: the logistic refinement is a local search, and its
        # counts along the path are not always monotone; seed 2 gives ... 7, 5, 6, 3 ...)
        best = l0jax.select_lambda(path, n_features=10)
        model = path.model(best)
        assert 1 <= len(model.get_selected_features()) <= 10
        accuracy = np.mean(model.predict(Xs[test]) == y[test])
        assert accuracy >= full_accuracy - 0.03, (seed, accuracy, full_accuracy, path.n_active[best])


def test_labels_probabilities_and_decision_function():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((200, 5))
    logits = 1.5 * X[:, 0] - 2.0 * X[:, 2] + 0.5
    labels = np.where(rng.random(200) < 1 / (1 + np.exp(-logits)), "yes", "no")
    for seed in range(10):  # the selection is an optimisation outcome: every seed
        fitted = l0jax.SparseL0Logistic(5, seed=seed).fit(X, labels, lambda_reg=0.01, lr=0.05, epochs=800)
        assert set(fitted.get_selected_features().tolist()) == {0, 2}, seed
    model = l0jax.SparseL0Logistic(5, seed=1).fit(X, labels, lambda_reg=0.01, lr=0.05, epochs=800)
    np.testing.assert_array_equal(model.classes_, ["no", "yes"])
    assert model.coef_[0] > 0 > model.coef_[2]
    eta = np.asarray(model.decision_function(X))
    np.testing.assert_allclose(eta, X @ model.coef_ + model.intercept_, rtol=1e-5, atol=1e-5)
    proba = np.asarray(model.predict_proba(X))
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-eta)), rtol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X), np.where(eta > 0, "yes", "no"))
    # As accurate on the sample as the Bayes rule with the true logits (up to 3 points).
    bayes = np.mean(np.where(logits > 0, "yes", "no") == labels)
    assert np.mean(model.predict(X) == labels) >= bayes - 0.03
    # 0/1 labels give the same fit as the strings they encode.
    same = l0jax.SparseL0Logistic(5, seed=1).fit(
        X, (labels == "yes").astype(int), lambda_reg=0.01, lr=0.05, epochs=800
    )
    np.testing.assert_array_equal(np.asarray(same.weight), np.asarray(model.weight))
    np.testing.assert_array_equal(same.classes_, [0, 1])


def test_bad_labels():
    X = np.ones((4, 2))
    model = l0jax.SparseL0Logistic(2)
    with pytest.raises(ValueError, match="exactly two classes"):
        model.fit(X, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="exactly two classes"):
        model.fit(X, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="y must be finite"):
        model.fit(X, [0, 1, np.nan, 1])
    with pytest.raises(ValueError, match="not fitted"):
        model.predict_proba(X)
    with pytest.raises(ValueError, match="labels not seen in fit"):
        l0jax.l0_path(X, [0, 1, 0, 1], [0.1], kind="logistic", X_val=X, y_val=[0, 1, 2, 1], epochs=5)
