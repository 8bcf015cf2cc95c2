"""Survey calibration speed against l0-python and against the scipy floor, plus the stress-test quality.

Run: ``.venv/bin/python benchmarks/calibration.py [--workloads A,B,C] [--with-d] [--with-e] [--devices 1,2,4,8]
[--quality] [--census]``
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
* E (``--with-e``, heavier): PolicyEngine's shape, 12,000 households cloned into 430 districts
  (5.16 million columns) against 21,000 national, state and district targets, 80 nonzeros per
  column (413 million), built district by district as ``l0jax.ColumnBlocks`` (``workload_e``):
  peak memory against the bytes of M, ms/epoch, the scipy floor, and with ``--devices`` the same
  on emulated devices.

``--devices 1,2,4,8`` also times each workload on that many emulated CPU devices
(``calibrate(..., devices=k)`` in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
on one machine's cores this measures what the sharding costs (chunked products, collectives), not
a speed-up.

For each: ms per epoch of l0jax and of l0-python (torch CPU, 2 threads) measured in this run,
their ratio; the floor, the time of one scipy CSR ``M @ w`` plus one ``M.T @ r`` on the same
matrix, and l0jax's ratio to it; l0jax's compile time for the workload's shapes (first call minus
a warm call, after the process's one-time start-up, which is printed first) and the peak
memory of l0jax's fit above the process before it (matrix already built), against the bytes of
M's arrays (data, indices, indptr).

``--quality`` runs workload B for 5,000 epochs in both libraries with l0-python's settings and
compares the returned deterministic weights: relative loss mean(((y - M w) / (y + 1))**2) and
households closed (weight exactly 0).

``--census`` adds the census selection (``calibration_production.py``: keep
1,000 of the World Bank census's 57,867 households, against l0-python's best lambda of a small grid).

Timings on a shared machine are noisy; the script prints everything needed to judge them.
"""

from __future__ import annotations

import argparse
import os
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
from l0jax._src.calibration.blocks import shape_of
from l0jax._src.operators import as_operator

_STRESS = {
    "temperature": 0.66,
    "lambda_l0": 5e-5,
    "lr": 0.2,
    "loss_type": "relative",
    "init_keep_prob": 0.5,
    "log_weight_jitter_sd": 0.5,
}
SETTINGS = {
    "A": {
        "temperature": 0.35,
        "lambda_l0": 1e-6,
        "lr": 0.01,
        "loss_type": "relative",
        "init_keep_prob": 0.5,
        "log_weight_jitter_sd": 0.0,
    },
    "B": _STRESS,
    "C": _STRESS,
    "D": {**_STRESS, "init_keep_prob": 0.999},
    "E": {**_STRESS, "init_keep_prob": 0.999},
}
# Epochs timed per workload: (l0jax, l0-python).
EPOCHS = {"A": (2000, 100), "B": (500, 20), "C": (300, 10), "D": (20, 3)}


# -- workloads ---------------------------------------------------------------------------------


def _csr32(M: sp.spmatrix) -> sp.csr_matrix:
    M = sp.csr_matrix(M)
    return sp.csr_matrix(
        (M.data.astype(np.float32), M.indices.astype(np.int32), M.indptr.astype(np.int32)), shape=M.shape
    )


def _stress_like(m: int, n: int, density: float, seed: int):
    """M lognormal(1.5, 0.25) at ``density``; y = M @ w with half of w zero, the rest lognormal(2, 1)."""
    rng = np.random.default_rng(seed)
    M = sp.random(
        m, n, density=density, format="csr", random_state=rng, data_rvs=lambda k: rng.lognormal(1.5, 0.25, k)
    )
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
        indices[lo * per_col : hi * per_col] = rows.ravel()
        data[lo * per_col : hi * per_col] = rng.lognormal(1.5, 0.25, (hi - lo) * per_col)
    indptr = np.arange(0, n * per_col + 1, per_col, dtype=np.int64).astype(np.int32)
    M = sp.csc_matrix((data, indices, indptr), shape=(m, n)).tocsr()
    del data, indices
    return _csr32(M), M @ w


def matrix_bytes(M: sp.csr_matrix) -> int:
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


# Workload E: PolicyEngine's shape. Rows: national targets, then each state's, then each district's.
E_SHAPE = dict(
    base=12_000,
    districts=430,
    states=50,
    national=600,
    per_state=150,
    per_district=30,
    national_k=50,
    state_k=20,
    district_k=10,
)


def workload_e(seed: int = 5, **shape):
    """Production-shaped: ``base`` households cloned into every district (district-major columns).

    A household touches ``national_k`` of the national rows, ``state_k`` of its district's state's
    rows and ``district_k`` of its district's rows (the same pattern and values in every district, as
    for clones of one household); 600 + 50 x 150 + 430 x 30 = 21,000 targets, 80 nonzeros per
    column, 12,000 x 430 = 5.16 million columns, 413 million nonzeros. M is never assembled: it
    comes back as ``l0jax.ColumnBlocks`` building one district's 12,000 columns (CSC) on demand.

    Returns:
      ``(blocks, y, info)``: the blocks, targets ``M @ w`` for a half-sparse truth w (computed block
      by block), and a dict with ``m``, ``n``, ``nnz`` and ``bytes`` (CSC arrays: values, row
      indices, column pointers).
    """
    p = {**E_SHAPE, **shape}
    rng = np.random.default_rng(seed)
    base, districts = p["base"], p["districts"]
    per_col = p["national_k"] + p["state_k"] + p["district_k"]
    pick = lambda total, k: np.sort(np.argsort(rng.random((base, total)), axis=1)[:, :k], axis=1)  # noqa: E731
    national = pick(p["national"], p["national_k"])
    state_rows = pick(p["per_state"], p["state_k"])
    district_rows = pick(p["per_district"], p["district_k"])
    values = rng.lognormal(1.5, 0.25, (base, per_col)).astype(np.float32)
    state_of = (np.arange(districts) * p["states"]) // districts
    first_state = p["national"]
    first_district = first_state + p["states"] * p["per_state"]
    m = first_district + districts * p["per_district"]
    indptr = np.arange(0, base * per_col + 1, per_col, dtype=np.int32)

    def block(d: int) -> sp.csc_matrix:
        rows = np.concatenate(
            [
                national,
                first_state + state_of[d] * p["per_state"] + state_rows,
                first_district + d * p["per_district"] + district_rows,
            ],
            axis=1,
        ).astype(np.int32)
        return sp.csc_matrix((values.ravel(), rows.ravel(), indptr), shape=(m, base))

    truth = rng.lognormal(2.0, 1.0, base * districts)
    truth[rng.random(truth.size) < 0.5] = 0.0
    y = np.zeros(m)
    for d in range(districts):
        y += block(d) @ truth[d * base : (d + 1) * base]
    blocks = l0jax.ColumnBlocks(block, widths=[base] * districts)
    nnz = base * districts * per_col
    return (
        blocks,
        y,
        {"m": m, "n": base * districts, "nnz": nnz, "bytes": nnz * 8 + (base * districts + 1) * 4},
    )


def block_floor_ms(blocks) -> float:
    """The scipy floor of column blocks: one single-threaded ``B @ w`` plus ``B.T @ r`` per block, summed."""
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(len(blocks)):
        B = blocks.block(i)
        w = rng.random(B.shape[1], dtype=np.float32)
        r = rng.random(B.shape[0], dtype=np.float32)
        total += best_time(lambda B=B, w=w, r=r: (B @ w, B.T @ r), repeats=2, min_time=0.05)
    return 1e3 * total


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
model = SparseCalibrationWeights(n_features=M.shape[1], beta=kw["temperature"], init_keep_prob=kw["init_keep_prob"],
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


def run_l0_python(
    name: str, M: sp.csr_matrix, y: np.ndarray, epochs: int, *, quality: bool = False
) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        return run_calibration_reference(
            REFERENCE,
            tmp,
            M,
            y,
            {"settings": SETTINGS[name], "epochs": epochs, "quality": quality},
            timeout=6 * 3600,
        )


# -- reports -------------------------------------------------------------------------------------


def first_call_s() -> float:
    """Seconds of the first calibrate() of the process on a tiny problem: the one-time start-up
    (runtime initialisation, small kernels) plus that problem's compile; later compiles are per shape.
    """
    t = time.perf_counter()
    l0jax.calibrate(np.ones((3, 4)), np.ones(3), key=0, epochs=1, polish_epochs=1)
    return time.perf_counter() - t


def speed(names: list[str], skip_reference: bool) -> None:
    print(f"first calibrate() of this process (3 x 4 problem, 1 epoch): {first_call_s():.2f} s")
    print(
        f"{'':3} {'shape':>19} {'nnz':>11} {'backend':>7} | {'l0jax ms':>9} {'l0-python ms':>12} {'speed-up':>8} | "
        f"{'floor ms':>8} {'/floor':>6} | {'compile s':>9} {'build s':>7} {'peak MiB':>8} {'x M':>5}"
    )
    for name in names:
        M, y = workload(name)
        ours = time_l0jax(name, M, y, EPOCHS[name][0])
        fl = floor_ms(M)
        ref = None if skip_reference else run_l0_python(name, M, y, EPOCHS[name][1])
        theirs = ref["ms"] if ref else float("nan")
        mb = matrix_bytes(M) / 2**20
        print(
            f"{name:3} {f'{M.shape[0]:,} x {M.shape[1]:,}':>19} {M.nnz:>11,} {ours['backend']:>7} | "
            f"{ours['ms']:9.2f} {theirs:12.1f} {theirs / ours['ms']:7.1f}x | {fl:8.2f} {ours['ms'] / fl:6.2f} | "
            f"{ours['compile_s']:9.2f} {ours['build_s']:7.2f} {ours['peak_mib']:8.0f} {ours['peak_mib'] / mb:5.2f}",
            flush=True,
        )
        del M, y
    print(
        f"epochs timed (l0jax, l0-python): {', '.join(f'{n} {EPOCHS[n]}' for n in names)}; "
        f"l0-python is torch on CPU with 2 threads; 'x M' is l0jax's peak memory above the process "
        f"before the fit, in units of the bytes of M's CSR arrays."
    )


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
    print(
        f"{'l0jax':10} {res.relative_loss:14.3e} {res.relative_errors.mean():12.3e} {res.active_count:7,} "
        f"{n - res.active_count:7,} {seconds:8.1f}"
    )
    if ref:
        print(
            f"{'l0-python':10} {ref['relative_loss']:14.3e} {ref['mean_rel_error']:12.3e} {ref['active']:7,} "
            f"{n - ref['active']:7,} {ref['seconds']:8.1f}"
        )
    print(
        f"(relative loss = mean(((y - M w) / (y + 1))**2); closed = weight exactly 0; l0jax's polish: "
        f"{res.polish})"
    )


def time_fit(M, y, kw: dict, epochs: int, **extra) -> tuple[float, float]:
    """(compile s, ms per epoch) of ``calibrate`` on M (an operator, possibly sharded): a first
    1-epoch call minus a warm one, then the best of two ``epochs``-epoch fits without polish.
    """
    t = time.perf_counter()
    l0jax.calibrate(M, y, key=0, epochs=1, log_every=1, polish_epochs=1, warn_targets=False, **kw, **extra)
    first = time.perf_counter() - t
    t = time.perf_counter()
    l0jax.calibrate(M, y, key=0, epochs=1, log_every=1, polish_epochs=1, warn_targets=False, **kw, **extra)
    compile_s = first - (time.perf_counter() - t)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        l0jax.calibrate(
            M, y, key=0, epochs=epochs, log_every=epochs, polish=False, warn_targets=False, **kw, **extra
        )
        best = min(best, (time.perf_counter() - t) / epochs)
    return compile_s, 1e3 * best


def sharded_worker(name: str, counts: list[int], epochs: int) -> None:
    """Runs in a subprocess with emulated devices: ms/epoch of workload ``name`` on each device count."""
    import json

    from l0jax._src.calibration import sharding

    if name == "E":
        M, y, info = workload_e()
        m = info["m"]
    else:
        M, y = workload(name)
        m = M.shape[0]
    out = {}
    for count in counts:
        t = time.perf_counter()
        reset = _reset_peak()
        base = _rss_kib()
        layout = sharding.resolve_devices(count, shape_of(M)[1])
        op = sharding.shard_operator(M, layout, m=m)
        build = time.perf_counter() - t
        compile_s, ms = time_fit(op, y, SETTINGS[name], epochs)
        out[count] = {
            "ms": ms,
            "compile_s": compile_s,
            "build_s": build,
            "backend": op.backend,
            "peak_mib": (_peak_kib() - base) / 1024 if reset else float("nan"),
        }
        print(json.dumps({"devices": count, **out[count]}), file=sys.stderr, flush=True)
        del op
    print(json.dumps(out))


def sharded(name: str, counts: list[int], epochs: int) -> dict:
    """ms/epoch of workload ``name`` with 1..8 devices, in a subprocess with 8 emulated CPU devices."""
    import json
    import subprocess

    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={max(counts)}")
    cmd = [
        sys.executable,
        __file__,
        "--sharded-worker",
        name,
        "--device-counts",
        ",".join(map(str, counts)),
        "--sharded-epochs",
        str(epochs),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    # The worker reports each device count as it finishes (one JSON line on stderr each).
    done = {}
    for line in out.stderr.splitlines():
        if line.startswith('{"devices"'):
            row = json.loads(line)
            done[row.pop("devices")] = row
    if out.returncode != 0:
        lines = [x for x in out.stderr.splitlines() if not x.lstrip().startswith("@")]
        print(
            f"the {name} worker failed after {sorted(done)} device(s):\n" + "\n".join(lines[-8:])[-2000:],
            file=sys.stderr,
        )
    return done


def report_sharded(name: str, counts: list[int], epochs: int) -> None:
    res = sharded(name, counts, epochs)
    if not res:
        return
    one = res[min(res)]["ms"]
    print(
        f"\nworkload {name} on emulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count="
        f"{max(counts)}; all share this machine's cores, so this measures the sharding's overhead, not a "
        f"speed-up), {epochs} epochs timed:"
    )
    print(
        f"{'devices':>7} {'backend':>7} {'ms/epoch':>9} {'/ 1 device':>10} {'compile s':>9} "
        f"{'build s':>8} {'peak MiB':>8}"
    )
    for count in sorted(res):
        r = res[count]
        print(
            f"{count:>7} {r['backend']:>7} {r['ms']:>9.1f} {r['ms'] / one:>10.2f} {r['compile_s']:>9.2f} "
            f"{r['build_s']:>8.1f} {r['peak_mib']:>8.0f}",
            flush=True,
        )


def workload_e_report(epochs: int, counts: list[int]) -> None:
    """Workload E on this machine (one device), its floor and memory, then on 1..8 emulated devices."""
    from l0jax._src.calibration import sharding

    t = time.perf_counter()
    reset = _reset_peak()
    base = _rss_kib()
    blocks, y, info = workload_e()
    gen_s = time.perf_counter() - t
    print(
        f"\nworkload E: {info['m']:,} targets x {info['n']:,} households, {info['nnz']:,} nonzeros, M's CSC arrays "
        f"{info['bytes'] / 2**30:.2f} GiB (never assembled: built by district, 430 blocks); truth and targets "
        f"{gen_s:.0f} s",
        flush=True,
    )
    t = time.perf_counter()
    layout = sharding.resolve_devices(1, info["n"])
    op = sharding.shard_operator(blocks, layout, m=info["m"])
    build_s = time.perf_counter() - t
    built_gib = (_rss_kib() - base) / 2**20
    print(
        f"operator ({op.backend}, 1 device, 8 chunks) built in {build_s:.0f} s; process growth {built_gib:.2f} GiB",
        flush=True,
    )
    compile_s, ms = time_fit(op, y, SETTINGS["E"], epochs)
    peak = (_peak_kib() - base) / 2**20 if reset else float("nan")
    print(
        f"ms/epoch {ms:,.0f} (best of two {epochs}-epoch fits; compile {compile_s:.1f} s); peak memory above the "
        f"process before E {peak:.2f} GiB = {peak * 2**30 / info['bytes']:.2f}x the bytes of M",
        flush=True,
    )
    t = time.perf_counter()
    res = l0jax.calibrate(
        op,
        y,
        key=0,
        epochs=epochs,
        log_every=epochs,
        polish_epochs=epochs,
        warn_targets=False,
        **SETTINGS["E"],
    )
    print(
        f"a {epochs}-epoch fit end to end with {epochs} polish epochs: {time.perf_counter() - t:.1f} s "
        f"({res.summary()}); 1,000 epochs at this rate: {ms / 1e3:.2f} s x 1,000 = {ms / 60:.1f} min, plus "
        f"the polish",
        flush=True,
    )
    del op
    fl = block_floor_ms(blocks)
    print(
        f"scipy floor (one single-threaded B @ w and B.T @ r per district block, summed): {fl:,.0f} ms; "
        f"l0jax / floor {ms / fl:.2f}",
        flush=True,
    )
    if counts:
        report_sharded("E", counts, max(3, epochs // 2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default="A,B,C", help="comma-separated subset of A,B,C,D")
    parser.add_argument("--with-d", action="store_true", help="add the heavy production-shaped workload D")
    parser.add_argument("--quality", action="store_true", help="also run the 5,000-epoch stress comparison")
    parser.add_argument("--quality-only", action="store_true", help="only the 5,000-epoch stress comparison")
    parser.add_argument(
        "--census", action="store_true", help="also run the census selection (calibration_production.py)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip l0-python")
    parser.add_argument(
        "--devices",
        default="",
        help="also time these emulated device counts on the workloads, e.g. 1,2,4,8 (in a subprocess)",
    )
    parser.add_argument(
        "--with-e",
        action="store_true",
        help="add workload E (5.16M columns, 413M nonzeros; about 5 GiB of memory)",
    )
    parser.add_argument("--e-epochs", type=int, default=10, help="epochs timed on workload E")
    parser.add_argument("--sharded-worker", help=argparse.SUPPRESS)
    parser.add_argument("--device-counts", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--sharded-epochs", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(c) for c in args.devices.split(",") if c.strip()]
    if args.sharded_worker:
        sharded_worker(
            args.sharded_worker, [int(c) for c in args.device_counts.split(",")], args.sharded_epochs
        )
        return
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    if args.with_d and "D" not in names:
        names.append("D")
    print(f"machine: {machine()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.quality_only:
        speed(names, args.no_reference)
        for name in names if counts else []:
            report_sharded(name, counts, max(3, EPOCHS[name][0] // 3))
    if args.with_e:
        workload_e_report(args.e_epochs, counts)
    if args.quality or args.quality_only:
        quality(args.no_reference)
    if args.census:
        import calibration_production  # needs the demo extra (svy's World Bank data)

        print()
        calibration_production.main(["--skip-reference"] if args.no_reference else [])


if __name__ == "__main__":
    main()
