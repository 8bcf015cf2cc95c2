"""Survey calibration speed against l0-python and against the scipy floor, plus the stress-test quality.

Run: ``.venv/bin/python benchmarks/calibration.py [--workloads A,B,C] [--with-d] [--quality] [--census]``
(``L0_PYTHON=/path/to/python`` names the l0-python environment; see ``_common.l0_python``).

Workloads (synthetic, fixed seeds; DESIGN.md section 5):

* A: 200 targets x 10,000 households at density 0.3, targets U(1e6, 1e8) (l0-python's README
  calibration: beta 0.35, lambda_l0 1e-6, relative loss).
* B: l0-python's stress test, 2,000 x 20,000: M lognormal(1.5, 0.25) with 90% zeroed, half of the
  true weights zero, the rest lognormal(2, 1); beta 0.66, keep 0.5, weight jitter 0.5,
  lambda_l0 5e-5, lr 0.2, relative loss.
* C: 500 x 200,000 at density 0.05, generated and fitted like B.
* D (``--with-d``, heavy): production-shaped, 20,000 targets x 2,000,000 households, 40 nonzeros
  per household inside its district's block of 50 targets (400 districts; households sorted by
  district), about 80 million nonzeros; settings of B with PolicyEngine's init_keep_prob 0.999.

For each: ms per epoch of l0jax and of l0-python (torch CPU, 2 threads) measured in this run,
their ratio; the floor, the time of one scipy CSR ``M @ w`` plus one ``M.T @ r`` on the same
matrix, and l0jax's ratio to it; l0jax's compile time for the workload's shapes (first call minus
a warm call, after the process's one-time start-up, which is printed first) and the peak
memory of l0jax's fit above the process before it (matrix already built), against the bytes of
M's arrays (data, indices, indptr).

``--quality`` runs workload B for 5,000 epochs in both libraries with l0-python's settings and
compares the returned deterministic weights: relative loss mean(((y - M w) / (y + 1))**2) and
households closed (weight exactly 0).

``--census`` adds the census selection of the production issue (``calibration_production.py``: keep
1,000 of the World Bank census's 57,867 households, against l0-python's best lambda of a small grid).

Timings on a shared machine are noisy; the script prints everything needed to judge them.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_time, machine, run_calibration_reference

import l0jax
from l0jax._src.operators import as_operator

_STRESS = {"beta": 0.66, "lambda_l0": 5e-5, "lr": 0.2, "loss_type": "relative", "init_keep_prob": 0.5,
           "log_weight_jitter_sd": 0.5}
SETTINGS = {
    "A": {"beta": 0.35, "lambda_l0": 1e-6, "lr": 0.01, "loss_type": "relative", "init_keep_prob": 0.5,
          "log_weight_jitter_sd": 0.0},
    "B": _STRESS,
    "C": _STRESS,
    "D": {**_STRESS, "init_keep_prob": 0.999},
}
# Epochs timed per workload: (l0jax, l0-python).
EPOCHS = {"A": (2000, 100), "B": (500, 20), "C": (300, 10), "D": (20, 3)}


# -- workloads ---------------------------------------------------------------------------------


def _csr32(M: sp.spmatrix) -> sp.csr_matrix:
    M = sp.csr_matrix(M)
    return sp.csr_matrix((M.data.astype(np.float32), M.indices.astype(np.int32), M.indptr.astype(np.int32)),
                         shape=M.shape)


def _stress_like(m: int, n: int, density: float, seed: int):
    """M lognormal(1.5, 0.25) at ``density``; y = M @ w with half of w zero, the rest lognormal(2, 1)."""
    rng = np.random.default_rng(seed)
    M = sp.random(m, n, density=density, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.lognormal(1.5, 0.25, k))
    w = np.zeros(n)
    active = rng.choice(n, n // 2, replace=False)
    w[active] = rng.lognormal(2.0, 1.0, active.size)
    return _csr32(M), M @ w


def workload(name: str):
    """The matrix (float32 CSR, int32 indices) and targets of a workload."""
    if name == "A":
        rng = np.random.default_rng(1)
        M = sp.random(200, 10_000, density=0.3, format="csr", random_state=rng)
        return _csr32(M), rng.uniform(1e6, 1e8, 200)
    if name == "B":
        return _stress_like(2_000, 20_000, 0.1, 34543)
    if name == "C":
        return _stress_like(500, 200_000, 0.05, 3)
    if name == "D":
        return workload_d()
    raise ValueError(name)


def workload_d(seed: int = 4, m: int = 20_000, n: int = 2_000_000, per_col: int = 40, districts: int = 400):
    """Production-shaped: each household has ``per_col`` consecutive targets of its district's block."""
    rng = np.random.default_rng(seed)
    block = m // districts
    district = np.sort(rng.integers(0, districts, n)).astype(np.int32)
    start = rng.integers(0, block - per_col + 1, n).astype(np.int32)
    indices = np.empty(n * per_col, np.int32)
    data = np.empty(n * per_col, np.float32)
    w = np.zeros(n)
    active = rng.choice(n, n // 2, replace=False)
    w[active] = rng.lognormal(2.0, 1.0, active.size)
    step = 250_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = (district[lo:hi] * block + start[lo:hi])[:, None] + np.arange(per_col, dtype=np.int32)[None, :]
        indices[lo * per_col:hi * per_col] = rows.ravel()
        data[lo * per_col:hi * per_col] = rng.lognormal(1.5, 0.25, (hi - lo) * per_col)
    indptr = np.arange(0, n * per_col + 1, per_col, dtype=np.int64).astype(np.int32)
    M = sp.csc_matrix((data, indices, indptr), shape=(m, n)).tocsr()
    del data, indices
    return _csr32(M), M @ w


def matrix_bytes(M: sp.csr_matrix) -> int:
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


# -- measurements --------------------------------------------------------------------------------


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def floor_ms(M: sp.csr_matrix) -> float:
    """One scipy CSR ``M @ w`` plus one ``M.T @ r`` (the product l0jax's gradient needs)."""
    rng = np.random.default_rng(0)
    w = rng.random(M.shape[1], dtype=np.float32)
    r = rng.random(M.shape[0], dtype=np.float32)
    return 1e3 * best_time(lambda: (M @ w, M.T @ r), repeats=3, min_time=0.3)


def time_l0jax(name: str, M: sp.csr_matrix, y: np.ndarray, epochs: int) -> dict:
    kw = SETTINGS[name]
    out = {}
    reset = _reset_peak()
    base = _rss_kib()
    t = time.perf_counter()
    op = as_operator(M)
    out["build_s"] = time.perf_counter() - t
    out["backend"] = op.backend
    # Compile: a first 1-epoch call (tracing + compiling the loop and the finish) minus a warm one.
    t = time.perf_counter()
    l0jax.calibrate(op, y, key=0, epochs=1, log_every=1, polish_epochs=1, **kw)
    first = time.perf_counter() - t
    t = time.perf_counter()
    l0jax.calibrate(op, y, key=0, epochs=1, log_every=1, polish_epochs=1, **kw)
    out["compile_s"] = first - (time.perf_counter() - t)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        l0jax.calibrate(op, y, key=0, epochs=epochs, log_every=epochs, polish=False, **kw)
        best = min(best, (time.perf_counter() - t) / epochs)
    out["ms"] = 1e3 * best
    out["peak_mib"] = (_peak_kib() - base) / 1024 if reset else float("nan")
    del op
    return out


# Runs after _common.CALIBRATION_PRELUDE (M, y, kw = the settings, cfg = the payload).
REFERENCE = r"""
model = SparseCalibrationWeights(n_features=M.shape[1], beta=kw["beta"], init_keep_prob=kw["init_keep_prob"],
                                 log_weight_jitter_sd=kw["log_weight_jitter_sd"], seed=0)
fit = dict(lambda_l0=kw["lambda_l0"], lr=kw["lr"], loss_type=kw["loss_type"], verbose=False)
out = {"torch": torch.__version__}
if cfg["quality"]:
    t = time.perf_counter()
    model.fit(M, y, epochs=cfg["epochs"], **fit)
    out["seconds"] = time.perf_counter() - t
    with torch.no_grad():
        w = model.get_weights(deterministic=True).cpu().numpy().astype(np.float64)
    pred = M @ w
    out["relative_loss"] = float(np.mean(((y - pred) / (y + 1)) ** 2))
    out["active"] = int((w > 0).sum())
    out["mean_rel_error"] = float(np.mean(np.abs((y - pred) / (y + 1))))
else:
    model.fit(M, y, epochs=1, **fit)  # converts and caches the matrix
    t = time.perf_counter()
    model.fit(M, y, epochs=cfg["epochs"], **fit)
    out["ms"] = 1e3 * (time.perf_counter() - t) / cfg["epochs"]
print(json.dumps(out))
"""


def run_l0_python(name: str, M: sp.csr_matrix, y: np.ndarray, epochs: int, *, quality: bool = False) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        return run_calibration_reference(REFERENCE, tmp, M, y, {"settings": SETTINGS[name], "epochs": epochs,
                                                                 "quality": quality}, timeout=6 * 3600)


# -- reports -------------------------------------------------------------------------------------


def first_call_s() -> float:
    """Seconds of the first calibrate() of the process on a tiny problem: the one-time start-up
    (runtime initialisation, small kernels) plus that problem's compile; later compiles are per shape."""
    t = time.perf_counter()
    l0jax.calibrate(np.ones((3, 4)), np.ones(3), key=0, epochs=1, polish_epochs=1)
    return time.perf_counter() - t


def speed(names: list[str], skip_reference: bool) -> None:
    print(f"first calibrate() of this process (3 x 4 problem, 1 epoch): {first_call_s():.2f} s")
    print(f"{'':3} {'shape':>19} {'nnz':>11} {'backend':>7} | {'l0jax ms':>9} {'l0-python ms':>12} {'speed-up':>8} | "
          f"{'floor ms':>8} {'/floor':>6} | {'compile s':>9} {'build s':>7} {'peak MiB':>8} {'x M':>5}")
    for name in names:
        M, y = workload(name)
        ours = time_l0jax(name, M, y, EPOCHS[name][0])
        fl = floor_ms(M)
        ref = None if skip_reference else run_l0_python(name, M, y, EPOCHS[name][1])
        theirs = ref["ms"] if ref else float("nan")
        mb = matrix_bytes(M) / 2**20
        print(f"{name:3} {f'{M.shape[0]:,} x {M.shape[1]:,}':>19} {M.nnz:>11,} {ours['backend']:>7} | "
              f"{ours['ms']:9.2f} {theirs:12.1f} {theirs / ours['ms']:7.1f}x | {fl:8.2f} {ours['ms'] / fl:6.2f} | "
              f"{ours['compile_s']:9.2f} {ours['build_s']:7.2f} {ours['peak_mib']:8.0f} {ours['peak_mib'] / mb:5.2f}",
              flush=True)
        del M, y
    print(f"epochs timed (l0jax, l0-python): {', '.join(f'{n} {EPOCHS[n]}' for n in names)}; "
          f"l0-python is torch on CPU with 2 threads; 'x M' is l0jax's peak memory above the process "
          f"before the fit, in units of the bytes of M's CSR arrays.")


def quality(skip_reference: bool, epochs: int = 5000) -> None:
    M, y = workload("B")
    kw = SETTINGS["B"]
    t = time.perf_counter()
    res = l0jax.calibrate(M, y, key=0, epochs=epochs, **kw)
    seconds = time.perf_counter() - t
    ref = None if skip_reference else run_l0_python("B", M, y, epochs, quality=True)
    print(f"\nStress workload B, {epochs:,} epochs, l0-python's settings; returned deterministic weights:")
    print(f"{'':10} {'relative loss':>14} {'mean rel err':>12} {'active':>7} {'closed':>7} {'time s':>8}")
    n = M.shape[1]
    print(f"{'l0jax':10} {res.relative_loss:14.3e} {res.relative_errors.mean():12.3e} {res.active_count:7,} "
          f"{n - res.active_count:7,} {seconds:8.1f}")
    if ref:
        print(f"{'l0-python':10} {ref['relative_loss']:14.3e} {ref['mean_rel_error']:12.3e} {ref['active']:7,} "
              f"{n - ref['active']:7,} {ref['seconds']:8.1f}")
    print(f"(relative loss = mean(((y - M w) / (y + 1))**2); closed = weight exactly 0; l0jax's polish: "
          f"{res.polish})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="A,B,C", help="comma-separated subset of A,B,C,D")
    parser.add_argument("--with-d", action="store_true", help="add the heavy production-shaped workload D")
    parser.add_argument("--quality", action="store_true", help="also run the 5,000-epoch stress comparison")
    parser.add_argument("--quality-only", action="store_true", help="only the 5,000-epoch stress comparison")
    parser.add_argument("--census", action="store_true", help="also run the census selection (calibration_production.py)")
    parser.add_argument("--no-reference", action="store_true", help="skip l0-python")
    args = parser.parse_args()
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    if args.with_d and "D" not in names:
        names.append("D")
    print(f"machine: {machine()}")
    if not args.quality_only:
        speed(names, args.no_reference)
    if args.quality or args.quality_only:
        quality(args.no_reference)
    if args.census:
        import calibration_production  # needs the demo extra (svy's World Bank data)

        print()
        calibration_production.main(["--skip-reference"] if args.no_reference else [])


if __name__ == "__main__":
    main()
