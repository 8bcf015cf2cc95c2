"""The Flax notebook runs end to end at small size and reports consistent figures."""

import re

from notebooks import outputs_text, run_notebook


def test_flax_notebook_runs_and_compress_matches():
    text = outputs_text(run_notebook("flax_l0_layers.ipynb"))
    diff = float(re.search(r"max \|difference\| of the outputs: (\S+)", text).group(1))
    assert diff <= 1e-5
    l0 = [float(v) for v in re.findall(r"expected L0 +([\d.]+)", text)]
    start = float(re.search(r"expected L0 at start: (\S+)", text).group(1))
    assert l0 and l0[-1] < start  # the penalty is doing something even in the short run
    assert re.search(r"architecture: 64-128-64 -> \d+-\d+-\d+", text)
