"""The classical-calibration notebook runs (small size) and shows what it claims."""

import re

import pytest

from notebooks import outputs_text, run_notebook

pytest.importorskip("svy")


def test_classical_calibration_notebook():
    text = outputs_text(run_notebook("classical_calibration.ipynb"))
    values = dict(item.split("=") for item in re.search(r"RESULT (.*)", text).group(1).split())
    f = {k: float(v) for k, v in values.items() if v not in ("True", "False")}
    assert max(f["raking_iterations"], f["bounded_iterations"], f["logit_iterations"]) <= 10
    assert f["miss"] < 1e-10  # every calibration meets the 47 census totals
    assert 0.5 <= f["bounded_min"] and f["bounded_max"] <= 2.0
    assert 0.5 < f["logit_min"] and f["logit_max"] < 2.0
    assert values["infeasible_named"] == "True" and values["jk_converged"] == "True"
    assert f["se_ratio"] > 2  # calibrating on spending shrinks the food total's standard error
    assert f["max_z"] < 3  # the census values lie within 3 standard errors
    assert f["l0_active"] == 400 and 0.3 <= f["l0_min"] and f["l0_max"] <= 4.0
    assert 0.3 <= f["path_min"] and f["path_max"] <= 4.0
    assert f["path_best_error"] == f["path_min_error"]
