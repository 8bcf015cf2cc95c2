"""Textbook oracles: R survey's published calibrations of the api data, reproduced by the distance term.

R (survey package) on ``apiclus1`` with design weights ``pw``:
  * GREG (``calibrate(..., ~api99, c(6194, 3914069))``): weighted mean of api00 = 666.7177;
  * raking on stype (E 4421, H 755, M 1018) and sch.wide (No 1072, Yes 5122): 641.23.
l0jax gets there with no gates, a small distance strength (so the targets are met tightly) and
enough epochs for the distance to settle along the directions the targets leave free. The weights
are also checked against the closed forms computed here (GREG: d * (1 + x'lambda); raking:
iterative proportional fitting), and the means must be within 0.05% of R's.

The data: ``tests/data/apiclus1.csv``, the columns used here (and the school and district ids) of
``apiclus1`` from R's survey package (a cluster sample of 183 California schools from the
Academic Performance Index, California Department of Education; R survey is GPL-2 | GPL-3).
"""

import csv
from pathlib import Path

import numpy as np
import pytest

from l0jax import calibrate

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def apiclus1():
    with open(DATA / "apiclus1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    col = lambda k, t=float: np.array([t(r[k]) for r in rows])  # noqa: E731
    return {
        "api00": col("api00"),
        "api99": col("api99"),
        "pw": col("pw"),
        "stype": col("stype", str),
        "sch.wide": col("sch.wide", str),
    }


@pytest.fixture(scope="module")
def raking(apiclus1):
    """R's raking example: design weights, indicators of stype (E, H, M) and sch.wide (No, Yes), totals."""
    X = np.stack(
        [
            apiclus1["stype"] == "E",
            apiclus1["stype"] == "H",
            apiclus1["stype"] == "M",
            apiclus1["sch.wide"] == "No",
            apiclus1["sch.wide"] == "Yes",
        ]
    ).astype(float)
    return apiclus1["pw"], X, np.array([4421.0, 755.0, 1018.0, 1072.0, 5122.0])


def _mean(w, x):
    w = np.asarray(w, np.float64)
    return float(np.sum(w * x) / np.sum(w))


def test_greg_on_api99_matches_r_survey(apiclus1):
    d, api99 = apiclus1["pw"], apiclus1["api99"]
    X = np.stack([np.ones_like(api99), api99])
    totals = np.array([6194.0, 3914069.0])
    lam = np.linalg.solve((X * d) @ X.T, totals - X @ d)
    greg = d * (1 + lam @ X)  # the closed form: all weights positive here
    assert _mean(greg, apiclus1["api00"]) == pytest.approx(666.7177, abs=1e-4)

    res = calibrate(
        X,
        totals,
        key=0,
        use_gates=False,
        init_weights=d,
        distance="chi2",
        distance_strength=1e-5,
        loss_type="relative",
        lr=0.01,
        epochs=50_000,
        log_every=5000,
    )
    assert _mean(res.weights, apiclus1["api00"]) == pytest.approx(666.7177, rel=5e-4)
    np.testing.assert_allclose(res.weights, greg, rtol=0.02)
    np.testing.assert_allclose(res.predictions, totals, rtol=1e-4)


def test_raking_on_stype_and_sch_wide_matches_r_survey(apiclus1, raking):
    d, X, totals = raking
    ipf = d.copy()
    for _ in range(200):  # iterative proportional fitting, margin by margin
        for i in range(5):
            ipf = np.where(X[i] > 0, ipf * totals[i] / (X[i] @ ipf), ipf)
    assert _mean(ipf, apiclus1["api00"]) == pytest.approx(641.23, abs=5e-3)

    res = calibrate(
        X,
        totals,
        key=0,
        use_gates=False,
        init_weights=d,
        distance="raking",
        distance_strength=1e-3,
        loss_type="relative",
        lr=0.01,
        epochs=20_000,
        log_every=5000,
    )
    assert _mean(res.weights, apiclus1["api00"]) == pytest.approx(641.23, rel=5e-4)
    np.testing.assert_allclose(res.weights, ipf, rtol=1e-3)
    np.testing.assert_allclose(res.predictions, totals, rtol=1e-4)


def test_without_the_distance_the_weights_are_not_the_textbook_ones(apiclus1, raking):
    """The oracle is a real test of the distance term: meeting the totals alone lands elsewhere."""
    d, X, totals = raking
    res = calibrate(
        X,
        totals,
        key=0,
        use_gates=False,
        init_weights=d,
        loss_type="relative",
        lr=0.01,
        epochs=20_000,
        log_every=5000,
    )
    np.testing.assert_allclose(res.predictions, totals, rtol=1e-3)
    assert abs(_mean(res.weights, apiclus1["api00"]) / 641.23 - 1) > 1e-3
