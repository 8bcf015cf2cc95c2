"""The README's Python examples run as written (they are the first thing a new user copies)."""

import re
from pathlib import Path

import jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python examples"
    namespace: dict = {}
    # Users run the README without the test suite's strict promotion settings.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
