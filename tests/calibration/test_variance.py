"""Standard errors of calibrated estimates against R survey, jackknives and exact identities.

R survey 4.5 on ``apiclus1`` with ``svydesign(id=~dnum, weights=~pw, fpc=~fpc)`` (15 districts
sampled out of 757):

* ``svymean(~api00)``: SE 23.542240693781 (uncalibrated; the survey website prints 23.542);
* post-stratified on stype (E 4421, H 755, M 1018): mean 642.310788211584, SE 23.9204864450905;
* ``calibrate(~api99, c(6194, 3914069))`` (GREG): mean 666.717736250273, SE 3.29588091215716;
* ``rake`` on stype and sch.wide (No 1000, Yes 5194) to convergence: SE 23.745841047537;
* ``svytotal(~enroll+stype)``: SE 932235.03 (enroll), 1333.32, 158.70, 167.55 (stype E/H/M);
* ``as.svrepdesign`` (JK1, 15 replicates), ``svymean``: SE 26.3294 (api00), 26.9985 (api99).
"""

import csv
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import l0jax
from l0jax._src.calibration import variance

DATA = Path(__file__).resolve().parents[1] / "data"
STYPE = [4421.0, 755.0, 1018.0]


def _read(name):
    with open(DATA / name, newline="") as f:
        rows = list(csv.DictReader(f))

    def col(k, t=float):
        return np.array([t(r[k]) for r in rows])

    return (
        {k: col(k) for k in ("api00", "api99", "pw", "enroll", "fpc")}
        | {"stype": col("stype", str), "sch.wide": col("sch.wide", str)}
        | ({"dnum": col("dnum", int)} if "dnum" in rows[0] else {})
    )


@pytest.fixture(scope="module")
def clus1():
    return _read("apiclus1.csv")


@pytest.fixture(scope="module")
def strat():
    return _read("apistrat.csv")


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64():
        yield


def _design(api):
    return {"clusters": api["dnum"], "fpc": api["fpc"]}


def _calibrations(api):
    d, s, w = api["pw"], api["stype"], api["sch.wide"]
    one = np.ones_like(d)
    cells = np.stack([s == "E", s == "H", s == "M"]).astype(float)
    margins = np.vstack([cells, np.stack([w == "No", w == "Yes"]).astype(float)])
    return {
        "size": l0jax.calibrate_classical(one[None], [d.sum()], d),
        "post": l0jax.calibrate_classical(cells, STYPE, d),
        "greg": l0jax.calibrate_classical(np.stack([one, api["api99"]]), [6194.0, 3914069.0], d),
        "rake": l0jax.calibrate_classical(margins, STYPE + [1000.0, 5194.0], d, method="raking"),
    }


@pytest.mark.parametrize(
    ("name", "mean", "se"),
    [
        ("size", 644.169398907104, 23.542240693781),
        ("post", 642.310788211584, 23.9204864450905),
        ("greg", 666.717736250273, 3.29588091215716),
        ("rake", None, 23.745841047537),
    ],
)
def test_linearised_se_of_the_mean_matches_r_survey(clus1, name, mean, se):
    est = _calibrations(clus1)[name].mean(clus1["api00"], **_design(clus1))
    assert est.se == pytest.approx(se, rel=1e-9)
    if mean is not None:
        assert est.estimate == pytest.approx(mean, rel=1e-12)
    assert est.kind == "mean" and est.method == "linearization"


def test_horvitz_thompson_totals_match_r_survey(clus1):
    d, s = clus1["pw"], clus1["stype"]
    y = np.stack([clus1["enroll"], s == "E", s == "H", s == "M"], axis=1)
    se = np.sqrt(l0jax.design_variance(d[:, None] * y, **_design(clus1)))
    np.testing.assert_allclose(se, [932235.03, 1333.32, 158.70, 167.55], atol=6e-3)


def test_jk1_matches_r_as_svrepdesign(clus1):
    cal = _calibrations(clus1)["size"]  # a mean is unchanged by calibrating to the population size
    reps = l0jax.replicate_weights(clus1["pw"], method="JK1", **_design(clus1))
    assert reps.weights.shape == (15, 183)
    est = cal.replicate(reps).mean(np.stack([clus1["api00"], clus1["api99"]], axis=1))
    np.testing.assert_allclose(est.se, [26.3294, 26.9985], atol=6e-5)
    # A total is linear: the JK1 variance of the uncalibrated total is the linearised one exactly.
    total = clus1["enroll"] @ reps.weights.T
    np.testing.assert_allclose(
        np.sqrt(reps.variance(total, clus1["pw"] @ clus1["enroll"])), 932235.03, atol=6e-3
    )


def test_calibrated_totals_of_calibration_variables_have_no_variance(clus1):
    cals = _calibrations(clus1)
    assert cals["greg"].total(clus1["api99"], **_design(clus1)).se == pytest.approx(0, abs=1e-6)
    cells = np.stack([clus1["stype"] == k for k in "EHM"], axis=1).astype(float)
    est = cals["post"].total(cells, **_design(clus1))
    np.testing.assert_allclose(est.estimate, STYPE, rtol=1e-12)
    np.testing.assert_allclose(est.se, 0, atol=1e-6)


def _jackknife_in_test(cal, d, y, method, bounds):
    """Delete-one-school jackknife, each replicate recalibrated by its own call."""
    n = d.size
    theta = []
    for j in range(n):
        dj = d * n / (n - 1)
        dj[j] = 0
        rep = l0jax.calibrate_classical(cal.gram.data, cal.targets, dj, method=method, bounds=bounds)
        theta.append(rep.weights @ y / rep.weights.sum())
    theta = np.array(theta)
    return np.sqrt((n - 1) / n * np.sum((theta - theta.mean()) ** 2)), theta


@pytest.mark.parametrize("name", ["post", "greg", "rake"])
def test_linearised_se_agrees_with_a_jackknife_and_the_vmapped_replicates(clus1, name):
    """School-level design (each school a PSU, with replacement): 183 replicates."""
    cal = _calibrations(clus1)[name]
    y = clus1["api00"]
    se_jk, theta = _jackknife_in_test(cal, clus1["pw"], y, cal.method, None)
    lin = cal.mean(y)
    assert abs(lin.se / se_jk - 1) < 0.10
    reps = cal.replicate(l0jax.replicate_weights(clus1["pw"], method="JK1"))
    assert reps.converged.all()
    np.testing.assert_allclose(reps.weights @ y / reps.weights.sum(axis=1), theta, rtol=1e-10)
    assert reps.mean(y).se == pytest.approx(se_jk, rel=1e-8)


def test_cluster_jackknife_exceeds_linearisation_as_in_r(clus1):
    """With 15 clusters JK1 runs 11-13% above linearisation, calibrated or not; R shows the same
    gap before calibration (26.3294 against 23.542).
    """
    reps = l0jax.replicate_weights(clus1["pw"], method="JK1", **_design(clus1))
    for cal in _calibrations(clus1).values():
        ratio = cal.replicate(reps).mean(clus1["api00"]).se / cal.mean(clus1["api00"], **_design(clus1)).se
        assert 1.10 < ratio < 1.14


def test_replicates_compile_once(clus1):
    cal = _calibrations(clus1)["rake"]
    first = l0jax.replicate_weights(clus1["pw"], method="JK1", **_design(clus1))
    before = variance.solve_replicates._cache_size()
    out = cal.replicate(first)
    assert (
        variance.solve_replicates._cache_size() - before <= 1
    )  # one trace for all 15 replicates (0 if cached)
    assert out.iterations.shape == (15,) and out.converged.all() and out.iterations.max() >= 3
    traced = variance.solve_replicates._cache_size()
    other = l0jax.replicate_weights(clus1["pw"] * 1.1, method="JK1", **_design(clus1))
    l0jax.recalibrate_replicates(cal, other)
    assert variance.solve_replicates._cache_size() == traced


def test_stratified_jkn_equals_linearisation_for_a_total(strat):
    d, s, y = strat["pw"], strat["stype"], strat["enroll"]
    lin = l0jax.design_variance(d * y, strata=s, fpc=strat["fpc"])
    # The formula written out: per stratum (1 - n_h/N_h) n_h/(n_h - 1) sum (e - mean e)^2.
    expected = 0.0
    for h in "EHM":
        e = (d * y)[s == h]
        n_h, big_n = e.size, strat["fpc"][s == h][0]
        expected += (1 - n_h / big_n) * n_h / (n_h - 1) * np.sum((e - e.mean()) ** 2)
    assert lin == pytest.approx(expected, rel=1e-12)
    reps = l0jax.replicate_weights(d, method="JKn", strata=s, fpc=strat["fpc"])
    assert reps.weights.shape == (200, 200)
    assert reps.variance(reps.weights @ y, d @ y) == pytest.approx(lin, rel=1e-10)


def test_stratified_calibrated_mean_agrees_with_jkn(strat):
    d, w = strat["pw"], strat["sch.wide"]
    M = np.stack([np.ones_like(d), w == "Yes", strat["api99"]]).astype(float)
    totals = M @ d * np.array([1.0, 1.05, 1.02])
    cal = l0jax.calibrate_classical(M, totals, d, method="raking")
    lin = cal.mean(strat["api00"], strata=strat["stype"], fpc=strat["fpc"])
    rep = cal.replicate(l0jax.replicate_weights(d, method="JKn", strata=strat["stype"], fpc=strat["fpc"]))
    assert rep.converged.all()
    assert abs(rep.mean(strat["api00"]).se / lin.se - 1) < 0.10


def test_rao_wu_bootstrap_keeps_psu_counts_and_is_unbiased_for_totals(strat):
    d, s, y = strat["pw"], strat["stype"], strat["enroll"]
    lin = l0jax.design_variance(d * y, strata=s)
    for seed in range(10):
        reps = l0jax.replicate_weights(d, method="bootstrap", strata=s, replicates=1000, key=seed)
        factors = reps.weights / d
        for h in "EHM":  # n_h - 1 draws rescaled by n_h / (n_h - 1): the factors sum to n_h exactly
            np.testing.assert_allclose(factors[:, s == h].sum(axis=1), np.sum(s == h), rtol=1e-12)
        # E[v_boot] = v_lin for a total; 1000 replicates put v_boot within ~3 sd of it at 15%.
        assert abs(reps.variance(reps.weights @ y, d @ y) / lin - 1) < 0.15


def test_bootstrap_rescaling_with_fpc_has_variance_one_minus_f(strat):
    d, s = strat["pw"], strat["stype"]
    reps = l0jax.replicate_weights(d, method="bootstrap", strata=s, fpc=strat["fpc"], replicates=20, key=0)
    reps_key = l0jax.replicate_weights(
        d, method="bootstrap", strata=s, fpc=strat["fpc"], replicates=20, key=jax.random.key(0)
    )
    assert np.all(reps.weights >= 0) and reps_key.weights.shape == reps.weights.shape
    lam = np.sqrt(1 - 100 / 4421)  # the E stratum: 100 of 4421 schools
    factors = reps.weights[:, s == "E"] / d[s == "E"]
    counts = (factors - 1 + lam) / (lam * 100 / 99)  # times drawn: whole numbers
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_design_errors_are_named(clus1, strat):
    d = clus1["pw"]
    with pytest.raises(ValueError, match="single PSU"):
        l0jax.design_variance(d, strata=clus1["dnum"] == clus1["dnum"][0], clusters=clus1["dnum"])
    with pytest.raises(ValueError, match="constant within each stratum"):
        l0jax.design_variance(d, fpc=np.arange(d.size) + 1000.0)
    with pytest.raises(ValueError, match="fewer than the"):
        l0jax.design_variance(d, clusters=clus1["dnum"], fpc=10)
    with pytest.raises(ValueError, match="JKn"):
        l0jax.replicate_weights(d, method="JK1", strata=clus1["stype"])
    with pytest.raises(ValueError, match="key="):
        l0jax.replicate_weights(d, method="bootstrap")
    with pytest.raises(ValueError, match="clusters must have shape"):
        l0jax.design_variance(d, clusters=clus1["dnum"][:5])
    cal = _calibrations(clus1)["post"]
    with pytest.raises(ValueError, match="y must have shape"):
        cal.mean(clus1["api00"][:10])
    with pytest.raises(TypeError, match="ReplicateWeights"):
        cal.replicate(np.ones((3, d.size)))


def test_a_float64_calibration_keeps_its_precision_outside_the_x64_context(clus1):
    cal = _calibrations(clus1)["greg"]  # made in 64-bit mode (the autouse fixture)
    inside = cal.mean(clus1["api00"], **_design(clus1))
    reps = l0jax.replicate_weights(clus1["pw"], method="JK1", **_design(clus1))
    inside_jk = cal.replicate(reps).mean(clus1["api00"]).se
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        outside = cal.mean(clus1["api00"], **_design(clus1))
        outside_jk = cal.replicate(reps).mean(clus1["api00"]).se
    assert outside.se == inside.se == pytest.approx(3.29588091215716, rel=1e-9)
    assert outside_jk == inside_jk
