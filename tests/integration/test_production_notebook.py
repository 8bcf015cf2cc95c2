"""The production-calibration notebook runs (small size) and shows what it claims."""

import re

import pytest

pytest.importorskip("svy")

from notebooks import outputs_text, run_notebook


def test_production_calibration_notebook():
    text = outputs_text(run_notebook("production_calibration.ipynb"))
    values = dict(item.split("=") for item in re.search(r"RESULT (.*)", text).group(1).split())
    kept, k = int(values["kept"]), int(values["K"])
    assert abs(kept - k) <= 0.05 * k  # keep-K lands on K
    assert float(values["max_error"]) < 0.02  # and the kept households hit the census totals
    assert values["same"] == "True"  # resume == uninterrupted, bitwise
    assert float(values["region_with"]) < 0.2 * float(
        values["region_without"]
    )  # the penalty holds the regions
    assert values["achievable"] == values["targets"] == "47"
