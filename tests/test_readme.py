"""The README's Python examples run as written (they are the first thing a new user copies) and
print what the README says they print.
"""

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python examples"
    namespace: dict = {}
    outputs = []
    nn_stats = None
    # Users run the README without the test suite's strict promotion settings.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for block in blocks:
            out = io.StringIO()
            with redirect_stdout(out):
                exec(compile(block, str(README), "exec"), namespace)
            outputs.append(out.getvalue())
            if "ln.SparseMLP(" in block and "SizeBudget" not in block:  # later blocks reuse `model`
                nn_stats = namespace["ln"].sparsity_stats(namespace["model"])["layers.0"]
                nn_small = namespace["small"]
    # The stated outputs (comments in the blocks) that do not depend on float rounding.
    regression = next(out for block, out in zip(blocks, outputs) if "l0jax.SparseL0Linear(" in block)
    assert regression.splitlines()[0] == "[1. 0. 1. 0.]"
    nn_out = next(out for block, out in zip(blocks, outputs) if "ln.SparseMLP(" in block)
    assert (nn_stats["open_gates"], nn_stats["gates"]) == (38, 64)  # "38 of 64 here"
    assert "'open_gates': 38" in nn_out
    # Input gates shrink the first layer to its 38 open inputs.
    assert nn_small.layers[0].kernel.shape[0] == 38
    # The size budget lands on its target (the setup of tests/test_budget.py, where seeds 0-9 land
    # within 0.12%).
    budget_out = next(out for block, out in zip(blocks, outputs) if "ln.SizeBudget(" in block)
    assert budget_out.strip() == "1.00"
    attention_out = next(out for block, out in zip(blocks, outputs) if "ln.L0MultiHeadAttention(" in block)
    assert attention_out.strip() == "4 True"
    # Classical calibration: converged, the bounded selection keeps 400 within [0.5, 2], and the
    # path's chosen point is marked on the smallest held-out error.
    classical = next(out for block, out in zip(blocks, outputs) if "calibrate_classical(" in block)
    assert "raking calibration converged" in classical and "400 True True" in classical.splitlines()
    path = namespace["path"]
    assert path.holdout_error[path.best] == path.holdout_error.min()
