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
    regression = next(
        out for block, out in zip(blocks, outputs, strict=True) if "l0jax.SparseL0Linear(" in block
    )
    assert regression.splitlines()[0] == "[1. 0. 1. 0.]"
    nn_out = next(out for block, out in zip(blocks, outputs, strict=True) if "ln.SparseMLP(" in block)
    assert nn_stats["gates"] == 64 and f"'open_gates': {nn_stats['open_gates']}" in nn_out
    # Input gates shrink the first layer to exactly its open inputs, whatever their number.
    assert nn_small.layers[0].kernel.shape[0] == nn_stats["open_gates"]
    # Keep-K keeps exactly K households and bounded weights stay within their bounds, by construction.
    calibration = next(out for block, out in zip(blocks, outputs, strict=True) if "weight_bounds=" in block)
    assert "100 True True" in calibration.splitlines()
    classical = next(
        out for block, out in zip(blocks, outputs, strict=True) if "calibrate_classical(" in block
    )
    assert "raking calibration converged" in classical
    # The size budget lands on its target (the setup of tests/test_budget.py, where seeds 0-9 land
    # within 0.12%).
    budget_out = next(out for block, out in zip(blocks, outputs, strict=True) if "ln.SizeBudget(" in block)
    assert budget_out.strip() == "1.00"
    attention_out = next(
        out for block, out in zip(blocks, outputs, strict=True) if "ln.L0MultiHeadAttention(" in block
    )
    assert attention_out.strip() == "4 True"
