"""The deterministic refinement after the stochastic phase: exact best subsets on enumerable problems.

Best subsets are found by enumerating every support in float64 and minimising the model's own
objective ``data_loss + lambda * |S|`` (mean squared error or mean cross-entropy, intercept
unpenalised). Comparisons are rounding-proof: the refined support's exact objective must equal the
optimum to 1e-6 (relative), and the supports must be identical wherever the runner-up is worse by
more than 1e-4 (a gap no float32 rounding difference between CPUs can bridge).
"""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import l0jax
from l0jax._src.regression import refine as rf

GAP = 1e-4  # runner-up margin above which the best support must be matched exactly
REL = 1e-6  # relative slack on the optimum's objective (float32 refits evaluated in float64)


def _readme_data():
    rng = np.random.default_rng(0)
    cov = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    X = rng.multivariate_normal(np.zeros(4), cov, size=500)
    y = 30 + X @ np.array([1.0, 0.0, -2.0, 0.0]) + 1.5 * rng.standard_normal(500)
    return X, y


def _supports(p: int) -> np.ndarray:
    return ((np.arange(2**p)[:, None] >> np.arange(p)) & 1).astype(bool)


def _mse(X, y, S) -> float:
    Z = np.c_[np.ones(X.shape[0]), X[:, S]]
    coef = np.linalg.lstsq(Z, y, rcond=None)[0]
    return float(np.mean((y - Z @ coef) ** 2))


def _cross_entropy(X, y, S) -> float:
    """Mean cross-entropy plus the refinement's guard ridge (rf.LOGISTIC_RIDGE / 2) ||coef||^2."""
    n = X.shape[0]
    Z = np.c_[np.ones(n), X[:, S]]
    ridge = np.r_[0.0, np.full(S.sum(), rf.LOGISTIC_RIDGE)]
    theta = np.zeros(Z.shape[1])
    for _ in range(50):  # Newton's method in float64
        prob = 1 / (1 + np.exp(-Z @ theta))
        hess = (Z * (prob * (1 - prob))[:, None]).T @ Z / n + np.diag(ridge)
        theta -= np.linalg.solve(hess, Z.T @ (prob - y) / n + ridge * theta)
    eta = Z @ theta
    return float(np.mean(np.logaddexp(0, eta) - y * eta) + 0.5 * np.sum(ridge * theta**2))


def _table(X, y, lam, loss):
    """Objective of every support, as (objectives (2^p,), supports (2^p, p))."""
    supports = _supports(X.shape[1])
    values = np.array([loss(X, y, S) + lam * S.sum() for S in supports])
    return values, supports


def _check_best(values, supports, got: np.ndarray) -> None:
    """``got`` (indices) is optimal; identical to the best support when the runner-up is clearly worse."""
    got_mask = np.zeros(supports.shape[1], bool)
    got_mask[got] = True
    order = np.argsort(values)
    best, runner_up = values[order[0]], values[order[1]]
    mine = values[np.flatnonzero((supports == got_mask).all(axis=1))[0]]
    assert mine <= best + REL * abs(best), (np.flatnonzero(supports[order[0]]), got, mine, best)
    if runner_up - best > GAP:
        assert got.tolist() == np.flatnonzero(supports[order[0]]).tolist()


def test_readme_example_recovers_x0_and_x2_for_every_seed():
    X, y = _readme_data()
    values, supports = _table(X, y, 0.2, _mse)
    # The data's best subset is {x0, x2}, by a margin far above rounding.
    order = np.argsort(values)
    assert np.flatnonzero(supports[order[0]]).tolist() == [0, 2]
    assert values[order[1]] - values[order[0]] > 0.1
    exact = np.linalg.lstsq(np.c_[np.ones(500), X[:, [0, 2]]], y, rcond=None)[0]
    for seed in range(10):
        model = l0jax.SparseL0Linear(n_features=4, seed=seed).fit(X, y, lambda_reg=0.2, epochs=3000)
        np.testing.assert_array_equal(np.asarray(model.get_deterministic_gates()), [1.0, 0.0, 1.0, 0.0])
        _check_best(values, supports, model.get_selected_features())
        # The coefficients are the least-squares refit on the support, not shrunk gate products.
        np.testing.assert_allclose(model.coef_[[0, 2]], exact[1:], rtol=1e-4)
        np.testing.assert_allclose(model.intercept_, exact[0], rtol=1e-5)
        assert model.coef_[1] == 0.0 and model.coef_[3] == 0.0
        info = model.refinement_
        assert info["support"].tolist() == [0, 2]
        assert info["objective"] <= info["objective_before"] + REL * info["objective_before"]
        np.testing.assert_allclose(info["objective"], values[order[0]], rtol=1e-5)


def _random_linear(seed: int, p: int = 12, n: int = 80):
    rng = np.random.default_rng(1000 + seed)
    rho = rng.uniform(0.0, 0.8)
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.multivariate_normal(np.zeros(p), cov, size=n)
    beta = np.zeros(p)
    support = rng.choice(p, 4, replace=False)
    beta[support] = rng.choice([-1.0, 1.0], 4) * rng.uniform(0.3, 1.5, 4)
    y = 2.0 + X @ beta + rng.standard_normal(n)
    return X, y


def test_linear_refinement_finds_the_exact_best_subset_on_20_problems():
    for seed in range(20):
        X, y = _random_linear(seed)
        values, supports = _table(X, y, 0.05, _mse)
        model = l0jax.SparseL0Linear(n_features=12, seed=0).fit(X, y, lambda_reg=0.05, epochs=300)
        _check_best(values, supports, model.get_selected_features())


def _random_logistic(seed: int, p: int = 8, n: int = 200):
    rng = np.random.default_rng(2000 + seed)
    rho = rng.uniform(0.0, 0.7)
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.multivariate_normal(np.zeros(p), cov, size=n)
    beta = np.zeros(p)
    support = rng.choice(p, 3, replace=False)
    beta[support] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.5, 3)
    y = (0.3 + X @ beta + rng.logistic(size=n) > 0).astype(float)
    return X, y


def test_logistic_refinement_finds_the_exact_best_subset_on_10_problems():
    for seed in range(10):
        X, y = _random_logistic(seed)
        values, supports = _table(X, y, 0.01, _cross_entropy)
        model = l0jax.SparseL0Logistic(n_features=8, seed=0).fit(X, y, lambda_reg=0.01, lr=0.05, epochs=300)
        _check_best(values, supports, model.get_selected_features())
        gates = np.asarray(model.get_deterministic_gates())
        assert set(np.unique(gates)) <= {0.0, 1.0}


def test_path_refines_every_lambda_to_its_best_subset():
    X, y = _random_linear(3)
    lambdas = np.array([0.0, 0.01, 0.05, 0.2, 1.0, 5.0])
    path = l0jax.l0_path(X, y, lambdas, epochs=300)
    for i, lam in enumerate(lambdas):
        values, supports = _table(X, y, lam, _mse)
        got = np.flatnonzero(path.gates[i] > 0.5)
        _check_best(values, supports, got)
        assert set(np.unique(path.gates[i])) <= {0.0, 1.0}
        # The path's entry is the model it hands out.
        model = path.model(i)
        np.testing.assert_allclose(model.coef_, path.coef[i], rtol=0, atol=0)
        np.testing.assert_allclose(
            np.asarray(model.predict(X[:5])), X[:5] @ path.coef[i] + path.intercept[i], rtol=1e-5
        )
    assert path.n_active[-1] == 0  # lambda = 5 is above the total variance of y: no feature pays


def test_refined_model_is_consistent_under_both_eval_rules():
    X, y = _random_linear(5)
    for rule in ("median", "paper"):
        model = l0jax.SparseL0Linear(n_features=12, seed=1, eval_rule=rule).fit(
            X, y, lambda_reg=0.05, epochs=200
        )
        gates = np.asarray(model.get_deterministic_gates())
        support = model.get_selected_features()
        np.testing.assert_array_equal(gates, np.isin(np.arange(12), support).astype(gates.dtype))
        exact = np.linalg.lstsq(np.c_[np.ones(80), X[:, support]], y, rcond=None)[0]
        np.testing.assert_allclose(model.coef_[support], exact[1:], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(model.predict(X)), X @ model.coef_ + model.intercept_, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(model.get_coefficients(), model.coef_)
        assert model.get_sparsity() == 1 - len(support) / 12


def test_refinement_never_raises_the_objective_and_can_be_switched_off():
    X, y = _readme_data()
    for seed in range(10):
        off = l0jax.SparseL0Linear(n_features=4, seed=seed).fit(
            X, y, lambda_reg=0.2, epochs=300, refine=False
        )
        on = l0jax.SparseL0Linear(n_features=4, seed=seed).fit(X, y, lambda_reg=0.2, epochs=300)
        assert off.refinement_ is None
        info = on.refinement_
        assert info["support_before"].tolist() == off.get_selected_features().tolist()
        assert info["objective"] <= info["objective_before"] * (1 + REL)


def test_changing_lambda_does_not_recompile(monkeypatch):
    X, y = _random_linear(7)
    for kind, fn in (("linear", rf._refine_linear), ("logistic", rf._refine_logistic)):
        counted = jax.jit(chex.assert_max_traces(fn, n=1), static_argnames=rf._STATIC)
        monkeypatch.setitem(rf._PROGRAMS, (kind, False), counted)
        target = y if kind == "linear" else (y > np.median(y)).astype(float)
        cls = l0jax.SparseL0Linear if kind == "linear" else l0jax.SparseL0Logistic
        for lam in (0.01, 0.05, 0.3):
            cls(n_features=12, seed=0).fit(X, target, lambda_reg=lam, epochs=20)
    before = rf._PROGRAMS[("linear", True)]._cache_size()
    l0jax.l0_path(X, y, [0.01, 0.1, 1.0], epochs=20)
    l0jax.l0_path(X, y, [0.02, 0.2, 2.0], epochs=20)
    assert rf._PROGRAMS[("linear", True)]._cache_size() - before <= 1


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_refine_must_be_a_bool(bad):
    X, y = _random_linear(0)
    with pytest.raises(ValueError, match="refine"):
        l0jax.SparseL0Linear(n_features=12).fit(X, y, epochs=5, refine=bad)
    with pytest.raises(ValueError, match="refine"):
        l0jax.l0_path(X, y, [0.1], epochs=5, refine=bad)


def test_gate_locations_give_exact_gates():
    support = np.array([True, False, True])
    for beta, gamma, zeta in ((2 / 3, -0.1, 1.1), (0.1, -0.5, 1.01), (3.0, -0.01, 2.0)):
        log_alpha = rf.gate_locations(support, beta, gamma, zeta)
        for rule in ("median", "paper"):
            gates = l0jax.hard_concrete_eval(log_alpha, beta, gamma=gamma, zeta=zeta, rule=rule)
            np.testing.assert_array_equal(np.asarray(gates), [1.0, 0.0, 1.0])
