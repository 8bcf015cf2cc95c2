"""The prune-to-size notebook runs at small size, reaches its size budget and compresses exactly."""

import re

from notebooks import outputs_text, run_notebook


def test_prune_to_size_notebook():
    text = outputs_text(run_notebook("prune_to_size.ipynb"))
    diff = float(re.search(r"max \|difference\| of the outputs: (\S+)", text).group(1))
    assert diff <= 1e-5
    ratio = float(re.search(r"expected size / target: (\S+)", text).group(1))
    assert abs(ratio - 1.0) <= 0.05
    dense = re.search(r"dense +[\d.]+ +4 +128 +(\d+)", text)
    pruned = re.search(r"pruned +[\d.]+ +(\d+) +(\d+) +(\d+)", text)
    assert dense and pruned and int(pruned.group(3)) < int(dense.group(1))
