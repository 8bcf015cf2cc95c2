"""Runs the notebooks under ``notebooks/`` from the test suite.

Every notebook reads ``L0JAX_NOTEBOOK_SMALL``: when it is "1" (as here) it shrinks its problem so
the whole notebook runs in seconds, while the same cells run at full size for a reader.
"""

from __future__ import annotations

import os
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, *, timeout: int = 600) -> object:
    """Executes ``notebooks/<name>`` in a fresh kernel and returns the executed notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (failing the test) when any cell fails.
    """
    import nbclient
    import nbformat

    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    os.environ["L0JAX_NOTEBOOK_SMALL"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return nb


def outputs_text(nb: object) -> str:
    """All text the notebook's cells printed or returned, joined, for assertions on values."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)
