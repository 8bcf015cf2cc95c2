"""The stated figures on real survey data (svy's World Bank census and sample), through ``l0jax demo``.

(a) the 825-household sample calibrated to the 47 census totals: every target within 0.5%, weights
non-negative; (b) a selection of at most 5% of the 57,867 census households whose calibrated
weights hit every target within 2%.
"""

import numpy as np
import pytest

pytest.importorskip("svy")

from l0jax import calibrate
from l0jax.demo import run_demo, world_bank_survey
from l0jax.demo._run import CENSUS_MAX_SHARE, CENSUS_TOLERANCE, SAMPLE_TOLERANCE


def test_demo_meets_the_sample_and_census_figures(tmp_path):
    lines = []
    fig = run_demo(tmp_path, printer=lines.append)
    a, b = fig["sample"], fig["census"]
    assert a["met"] == 47 and a["max_error"] <= SAMPLE_TOLERANCE and a["min_weight"] > 0
    assert a["kept"] == a["households"] == 825
    assert fig["design"]["max_error"] > 0.3  # the design weights alone miss by far
    assert b["met"] == 47 and b["max_error"] <= CENSUS_TOLERANCE and b["min_weight"] >= 0
    assert b["households"] == 57_867 and b["kept"] <= CENSUS_MAX_SHARE * 57_867
    assert b["kept"] == 1000  # the default K
    text = "\n".join(lines)
    assert "47/47 within 0.5%" in text and "47/47 within 2.0%" in text and f"{b['kept']:,} of 57,867" in text
    png = tmp_path / "demo_target_errors.png"
    assert (
        fig["plot"] == str(png)
        and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        and png.stat().st_size > 20_000
    )


@pytest.mark.slow
@pytest.mark.parametrize("keep", [500, 2000])
def test_census_selection_lands_on_k(keep):
    census = world_bank_survey("census")
    res = calibrate(
        census.matrix, census.targets, key=0, target_active=keep, loss_type="relative", lr=0.1, epochs=1000
    )
    assert abs(res.history["active"][-1] - keep) <= 0.05 * keep  # the dual ascent's own landing
    assert res.active_count == keep
    rel = np.abs(res.predictions / census.targets - 1)
    assert rel.max() <= CENSUS_TOLERANCE
