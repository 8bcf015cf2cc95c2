"""Exact classical calibration: closed forms, IPF, R survey's published results, scipy, infeasibility.

R survey on ``apiclus1`` with design weights ``pw`` (``tests/data/apiclus1.csv``, see
``test_oracles.py``): GREG on ~api99 with totals (6194, 3914069) gives the mean of api00
666.717736250273; post-stratification on stype (E 4421, H 755, M 1018) 642.310788211584; raking on
stype and sch.wide (No 1072, Yes 5122) 641.23.
"""

import csv
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize, root

import l0jax
from l0jax._src.calibration import classical, gram

DATA = Path(__file__).resolve().parents[1] / "data"
STYPE = np.array([4421.0, 755.0, 1018.0])


@pytest.fixture(scope="module")
def api():
    with open(DATA / "apiclus1.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    def col(k, t=float):
        return np.array([t(r[k]) for r in rows])

    return {k: col(k) for k in ("api00", "api99", "pw", "enroll")} | {
        "stype": col("stype", str),
        "sch.wide": col("sch.wide", str),
        "dnum": col("dnum", int),
    }


@pytest.fixture
def x64():
    with jax.enable_x64():
        yield


def _indicators(api, *, schwide=True):
    rows = [api["stype"] == "E", api["stype"] == "H", api["stype"] == "M"]
    if schwide:
        rows += [api["sch.wide"] == "No", api["sch.wide"] == "Yes"]
    return np.stack(rows).astype(float)


def _greg_problem(api):
    return np.stack([np.ones_like(api["api99"]), api["api99"]]), np.array([6194.0, 3914069.0])


def _mean(w, y):
    return float(np.sum(w * y) / np.sum(w))


def test_linear_is_the_greg_closed_form_in_one_step(api, x64):
    d = api["pw"]
    M, totals = _greg_problem(api)
    res = l0jax.calibrate_classical(M, totals, d)
    lam = np.linalg.solve((M * d) @ M.T, totals - M @ d)
    greg = d * (1 + lam @ M)
    assert res.converged and res.iterations == 1
    assert res.weights.dtype == np.float64
    np.testing.assert_allclose(res.weights, greg, rtol=1e-8)
    np.testing.assert_allclose(res.multipliers, lam, rtol=1e-8)
    np.testing.assert_allclose(res.g_weights, greg / d, rtol=1e-8)
    np.testing.assert_allclose(res.residuals, M @ res.weights - totals, atol=1e-6)
    assert np.all(np.abs(M @ res.weights - totals) <= 1e-10 * totals)
    assert _mean(res.weights, api["api00"]) == pytest.approx(666.717736250273, rel=1e-11)


def test_linear_on_one_factor_is_post_stratification(api, x64):
    d, M = api["pw"], _indicators(api, schwide=False)
    res = l0jax.calibrate_classical(M, STYPE, d)
    post = d * ((STYPE / (M @ d)) @ M)  # each cell's weights scaled to its population count
    np.testing.assert_allclose(res.weights, post, rtol=1e-10)
    assert res.iterations == 1
    assert _mean(res.weights, api["api00"]) == pytest.approx(642.310788211584, rel=1e-11)


def _ipf(d, M, totals):
    w = d.copy()
    for _ in range(10_000):
        before = w.copy()
        for row, total in zip(M, totals, strict=True):
            w = np.where(row > 0, w * total / (row @ w), w)
        if np.max(np.abs(w / before - 1)) < 1e-15:
            break
    return w


def test_raking_equals_ipf_within_ten_steps(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    ipf = _ipf(d, M, totals)
    res = l0jax.calibrate_classical(M, totals, d, method="raking")
    assert res.converged and res.iterations <= 10
    np.testing.assert_allclose(res.weights, ipf, rtol=1e-8)
    assert np.all(np.abs(M @ res.weights - totals) <= 1e-8 * totals)
    assert _mean(res.weights, api["api00"]) == pytest.approx(641.23, abs=5e-3)
    # Raking weights are d * exp(x' lam): the log ratios lie in the span of the margins.
    np.testing.assert_allclose(np.log(res.g_weights), res.multipliers @ M, atol=1e-10)


def _logit_distance_slope(x, lo, hi):
    """G'(x) of Deville-Saerndal's logit distance, written from the distance itself."""
    a = (hi - lo) / ((1 - lo) * (hi - 1))
    return (np.log((x - lo) / (1 - lo)) - np.log((hi - x) / (hi - 1))) / a


def _scipy_logit(M, totals, d, lo, hi):
    """The calibration equations M d F(M' lam) = t with Deville-Saerndal's logit F, by scipy's root."""
    a = (hi - lo) / ((1 - lo) * (hi - 1))
    ratio = lambda lam: lo + (hi - lo) / (1 + (hi - 1) / (1 - lo) * np.exp(-a * (lam @ M)))  # noqa: E731
    sol = root(
        lambda lam: (M @ (d * ratio(lam)) - totals) / totals, np.zeros(M.shape[0]), method="hybr", tol=1e-14
    )
    assert sol.success, sol.message
    return ratio(sol.x)


@pytest.mark.parametrize("problem", ["greg", "margins"])
def test_logit_within_bounds_meets_totals_and_matches_scipy(api, x64, problem):
    d = api["pw"]
    if problem == "greg":
        M, totals = _greg_problem(api)
    else:
        M, totals = _indicators(api), np.concatenate([STYPE, [1072.0, 5122.0]])
    res = l0jax.calibrate_classical(M, totals, d, method="logit", bounds=(0.5, 2.0))
    assert res.converged and res.iterations <= 10
    assert np.all((res.g_weights > 0.5) & (res.g_weights < 2.0))
    assert np.all(np.abs(M @ res.weights - totals) <= 1e-8 * totals)
    # Optimality certificate of the primal problem min sum d G(w/d) s.t. M w = t: the distance's
    # slope G'(w/d) is x' lam for every household (KKT of a convex problem).
    u = _logit_distance_slope(res.g_weights, 0.5, 2.0)
    np.testing.assert_allclose(u, res.multipliers @ M, atol=1e-9)
    # An independent solve of the calibration equations by MINPACK's hybrid method (the margins'
    # last row is redundant, which a square root-finder cannot take).
    keep = slice(None) if problem == "greg" else slice(0, 4)
    x = _scipy_logit(M[keep], totals[keep], d, 0.5, 2.0)
    np.testing.assert_allclose(res.g_weights, x, rtol=1e-9)


def test_truncated_linear_clips_at_binding_bounds_and_is_optimal(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    free = l0jax.calibrate_classical(M, totals, d)
    assert free.g_weights.min() < 0.88 and free.g_weights.max() > 1.8  # the bounds below bind
    res = l0jax.calibrate_classical(M, totals, d, bounds=(0.88, 1.8))
    assert res.converged and res.iterations <= 10
    assert np.all((res.g_weights >= 0.88) & (res.g_weights <= 1.8))
    assert np.any(res.g_weights == 0.88) and np.any(res.g_weights == 1.8)
    assert np.all(np.abs(M @ res.weights - totals) <= 1e-8 * totals)
    np.testing.assert_allclose(res.g_weights, np.clip(1 + res.multipliers @ M, 0.88, 1.8), atol=1e-12)
    # The bounded chi-square problem, a QP, solved by scipy over the ratios.
    md = (M * d)[:4]
    cons = {
        "type": "eq",
        "fun": lambda x: (md @ x - totals[:4]) / totals[:4],
        "jac": lambda x: md / totals[:4, None],
    }
    qp = minimize(
        lambda x: d @ (x - 1) ** 2 / d.sum(),
        np.ones_like(d),
        jac=lambda x: 2 * d * (x - 1) / d.sum(),
        method="SLSQP",
        constraints=[cons],
        bounds=[(0.88, 1.8)] * d.size,
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    np.testing.assert_allclose(res.g_weights, qp.x, atol=1e-6)


def test_bounded_raking_ratios_are_truncated_exponentials(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    res = l0jax.calibrate_classical(M, totals, d, method="raking", bounds=(0.9, 1.9))
    assert res.converged and res.iterations <= 10
    assert np.any(res.g_weights == 0.9) and np.any(res.g_weights == 1.9)  # both bounds bind
    assert np.all((res.g_weights >= 0.9) & (res.g_weights <= 1.9))
    np.testing.assert_allclose(res.g_weights, np.clip(np.exp(res.multipliers @ M), 0.9, 1.9), rtol=1e-12)
    assert np.all(np.abs(M @ res.weights - totals) <= 1e-8 * totals)


def test_a_target_beyond_its_row_is_named(api, x64):
    d, M = api["pw"], _indicators(api, schwide=False)
    names = ["stype=E", "stype=H", "stype=M"]
    with pytest.raises(ValueError, match=r"target 1 \('stype=H'\) = 1500 is above the most its row allows"):
        l0jax.calibrate_classical(
            M, [4421.0, 1500.0, 1018.0], d, method="logit", bounds=(0.5, 2.0), target_names=names
        )
    assert (M[1] @ d) * 2 < 1500  # the check is real: ratio 2 on every high school falls short


def test_conflicting_dependent_totals_are_named(api, x64):
    d, M = api["pw"], _indicators(api)
    with pytest.raises(ValueError, match=r"linearly dependent .* give 72 instead of 0"):
        l0jax.calibrate_classical(M, np.concatenate([STYPE, [1000.0, 5122.0]]), d, method="raking")


def test_jointly_unreachable_targets_are_named_by_the_lp(api, x64):
    d = api["pw"]
    elem, yes = api["stype"] == "E", api["sch.wide"] == "Yes"
    M = np.stack([np.ones_like(d), elem, yes]).astype(float)
    # Elementary schools need ratios near 1.9, schools meeting their target near 0.6: each alone is
    # reachable with w/d in (0.5, 2), both together are not (most elementary schools met theirs).
    totals = np.array([d.sum(), 1.9 * d[elem].sum(), 0.6 * d[yes].sum()])
    conflict = r"cannot be met jointly .* targets (0 \('N'\), )?1 \('E'\), 2 \('Yes'\) conflict"
    with pytest.raises(ValueError, match=conflict):
        l0jax.calibrate_classical(
            M, totals, d, method="logit", bounds=(0.5, 2.0), target_names=["N", "E", "Yes"]
        )


def test_sparse_input_and_both_layouts_agree(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    ref = l0jax.calibrate_classical(M, totals, d, method="raking", layout="dense")
    for matrix in (sp.csr_matrix(M), sp.coo_array(M), M):
        res = l0jax.calibrate_classical(matrix, totals, d, method="raking", layout="padded")
        assert isinstance(res.gram, gram.PaddedGram)
        np.testing.assert_allclose(res.weights, ref.weights, rtol=1e-12)
        assert res.iterations == ref.iterations


def test_padded_gram_products_match_dense(monkeypatch, x64):
    rng = np.random.default_rng(0)
    dense = sp.random(7, 53, density=0.3, random_state=rng).toarray()
    dense[:, 5] = 0  # a household with no nonzero
    M = sp.csc_matrix(dense)
    monkeypatch.setattr(gram, "_BLOCK", 16)  # several full blocks and a shorter last one
    padded = gram.gram_matrix(M, layout="padded")
    v, w, lam = rng.uniform(0.5, 2, 53), rng.normal(size=53), rng.normal(size=7)
    np.testing.assert_allclose(np.asarray(padded.gram(v)), (dense * v) @ dense.T, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(padded.matvec(w)), dense @ w, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(padded.rmatvec(lam)), lam @ dense, rtol=1e-12)


def test_layout_rule_prefers_padded_for_large_sparse_matrices():
    assert gram.choose_layout(60, 825, 9, 8) == "dense"
    assert gram.choose_layout(500, 1_000_000, 10, 8) == "padded"
    assert gram.choose_layout(500, 1_000, 400, 8) == "dense"


def test_new_totals_bounds_and_weights_do_not_recompile(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    l0jax.calibrate_classical(M, totals, d, method="logit", bounds=(0.5, 2.0))
    before = classical.solve._cache_size()
    l0jax.calibrate_classical(
        M, totals * 1.01, d * 1.02, method="logit", bounds=(0.4, 2.5), tol=1e-9, max_iter=30
    )
    assert classical.solve._cache_size() == before


def test_design_weight_zero_keeps_weight_zero(api, x64):
    d, M = api["pw"].copy(), _indicators(api, schwide=False)
    d[:3] = 0
    res = l0jax.calibrate_classical(M, STYPE, d, method="raking")
    assert np.all(res.weights[:3] == 0)
    np.testing.assert_allclose(M @ res.weights, STYPE, rtol=1e-10)


def test_float32_without_x64_converges_to_its_own_tolerance(api):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    res = l0jax.calibrate_classical(M, totals, d, method="raking")
    assert res.weights.dtype == np.float32 and res.converged
    np.testing.assert_allclose(M @ res.weights, totals, rtol=2e-5)


def test_non_convergence_warns_and_says_so(api, x64):
    d, M = api["pw"], _indicators(api)
    totals = np.concatenate([STYPE, [1072.0, 5122.0]])
    with pytest.warns(l0jax.CalibrationWarning, match="did not converge"):
        res = l0jax.calibrate_classical(M, totals, d, method="raking", max_iter=1)
    assert not res.converged and res.iterations == 1
    assert "NOT converged" in repr(res)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "logit"}, "needs bounds"),
        ({"method": "logit", "bounds": (1.0, 2.0)}, "0 <= L < 1 < U"),
        ({"bounds": (1.2, 2.0)}, "must contain 1"),
        ({"bounds": (2.0, 0.5)}, "L < U"),
        ({"method": "raking", "bounds": (-1.0, 2.0)}, ">= 0"),
        ({"method": "calmar"}, "unknown method"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"target_names": ["a"]}, "target_names"),
    ],
)
def test_bad_arguments_are_named(api, kwargs, match):
    with pytest.raises(ValueError, match=match):
        l0jax.calibrate_classical(_indicators(api, schwide=False), STYPE, api["pw"], **kwargs)


def test_bad_data_is_named(api):
    M = _indicators(api, schwide=False)
    with pytest.raises(ValueError, match="looks transposed"):
        l0jax.calibrate_classical(M.T, STYPE, api["pw"])
    with pytest.raises(ValueError, match="design_weights must be >= 0"):
        l0jax.calibrate_classical(M, STYPE, -api["pw"])
    with pytest.raises(ValueError, match="design_weights must have shape"):
        l0jax.calibrate_classical(M, STYPE, api["pw"][:5])
    with pytest.raises(ValueError, match="targets must be finite"):
        l0jax.calibrate_classical(M, [np.nan, 1.0, 2.0], api["pw"])
    with pytest.raises(ValueError, match="M must be finite"):
        l0jax.calibrate_classical(np.where(M > 0, np.inf, 0), STYPE, api["pw"])
