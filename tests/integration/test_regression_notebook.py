"""The sparse-regression notebook runs (small size), recovers the true support, and its FeatureGate
example keeps at most 5 breast-cancer features within 3 accuracy points of all 30.
"""

import re

import pytest

from notebooks import outputs_text, run_notebook


def summary(text: str, tag: str) -> dict[str, float]:
    line = text.split(tag, 1)[1].splitlines()[0]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def test_sparse_regression_notebook():
    pytest.importorskip("nbclient")
    text = outputs_text(run_notebook("sparse_regression.ipynb"))
    regression = summary(text, "SUMMARY")
    assert regression["recall"] >= 0.6 and regression["precision"] >= 0.5
    assert regression["path_recall"] >= 0.6 and regression["path_precision"] >= 0.5
    assert "<- select_lambda" in text
    gate = summary(text, "FEATUREGATE")
    assert 1 <= gate["n_gate"] <= 5 and 1 <= gate["n_clf"] <= 10
    assert gate["gate_accuracy"] >= gate["full_accuracy"] - 0.03
    assert gate["clf_accuracy"] >= gate["full_accuracy"] - 0.03
