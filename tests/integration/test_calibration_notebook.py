"""The survey-calibration notebook runs (small size) and shows what it claims."""

import re

from notebooks import outputs_text, run_notebook


def test_survey_calibration_notebook():
    text = outputs_text(run_notebook("survey_calibration.ipynb"))
    line = re.search(r"RESULT (.*)", text).group(1)
    values = dict(item.split("=") for item in line.split())
    f = {k: float(v) for k, v in values.items() if k != "same"}
    assert f["after_mean"] < f["before_mean"] / 100  # calibration removes the error
    assert f["after_max"] < 0.01
    assert f["active_last"] < f["active_first"]  # the active count falls over the epochs
    assert f["polished"] <= f["sampled"] and f["polished"] <= f["raw"]
    assert values["same"] == "True"
