"""The sparse-regression notebook runs (small size) and recovers the true support."""

import re

import pytest

from notebooks import outputs_text, run_notebook


def test_sparse_regression_notebook_recovers_the_support():
    pytest.importorskip("nbclient")
    text = outputs_text(run_notebook("sparse_regression.ipynb"))
    summary = dict(re.findall(r"(\w+)=([\d.]+)", text.split("SUMMARY", 1)[1]))
    assert float(summary["recall"]) >= 0.6 and float(summary["precision"]) >= 0.5
    assert float(summary["path_recall"]) >= 0.6 and float(summary["path_precision"]) >= 0.5
    assert "<- select_lambda" in text
