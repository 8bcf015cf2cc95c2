"""Shared helpers of the benchmarks: machine description, timing, and the l0-python reference.

The PyTorch reference (l0-python on the CPU torch wheel) runs in a subprocess of its own virtual
environment, built by ``benchmarks/reference_env.sh`` (``make bench-env``; or found through
``$L0_PYTHON``), on the same inputs, in the same benchmark run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """One line naming the machine, the JAX backend and the library versions."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()} "
        f"({device.device_kind}); Python {platform.python_version()}"
    )


def best_time(fn, *, repeats: int = 5, min_time: float = 0.2) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` rounds (each at least ``min_time``)."""
    best = float("inf")
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def l0_python() -> str | None:
    """Path of a python with l0-python and torch, building the environment if needed; None if impossible."""
    if os.environ.get("L0_PYTHON"):
        return os.environ["L0_PYTHON"]
    script = ROOT / "benchmarks" / "reference_env.sh"
    venv = ROOT / ".venv-l0-python"
    if (venv / "bin" / "python").exists():
        return str(venv / "bin" / "python")
    out = subprocess.run(["bash", str(script), str(venv)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"could not build the l0-python environment: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return out.stdout.strip().splitlines()[-1]


def run_reference(code: str, payload: dict | None = None, *, timeout: float = 3600) -> dict | None:
    """Runs ``code`` under l0-python's python; it reads JSON ``payload`` from stdin, prints JSON last."""
    python = l0_python()
    if python is None:
        print("l0-python reference unavailable (run `make bench-env` or set L0_PYTHON).", file=sys.stderr)
        return None
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    out = subprocess.run(
        [python, "-c", code],
        input=json.dumps(payload or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if out.returncode != 0:
        print(f"l0-python reference failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# The start of every l0-python calibration reference: the matrix, targets and settings of the payload.
CALIBRATION_PRELUDE = r"""
import json, sys, time, numpy as np, scipy.sparse as sp, torch
from l0.calibration import SparseCalibrationWeights
torch.set_num_threads(2)
cfg = json.load(sys.stdin)
M = sp.load_npz(cfg["matrix"]).tocsr()
y = np.load(cfg["targets"])
kw = cfg["settings"]
"""


def run_calibration_reference(body: str, folder: str, M, y, payload: dict, *, timeout: float) -> dict | None:
    """Writes ``M`` (scipy sparse) and ``y`` into ``folder`` and runs ``CALIBRATION_PRELUDE + body``
    under l0-python with ``payload`` plus the two file names.
    """
    import numpy as np
    import scipy.sparse as sp

    matrix, targets = os.path.join(folder, "M.npz"), os.path.join(folder, "y.npy")
    sp.save_npz(matrix, M, compressed=False)
    np.save(targets, y)
    return run_reference(
        CALIBRATION_PRELUDE + body, {"matrix": matrix, "targets": targets, **payload}, timeout=timeout
    )
