"""One-shot accelerator check of the calibration engine: every pure-XLA matrix layout on workloads B-E.

Run: ``python benchmarks/device_check.py [--small] [--workloads E,B,C,D] [--budget 420]``
(on a GPU/TPU machine with l0jax installed with its accelerator extra; ``--small`` shrinks D and E
to test the script on a CPU in a minute or two).

For each workload (``benchmarks/calibration.py``: B stress 2,000 x 20,000; C 500 x 200,000; D
20,000 x 2,000,000 at 80M nonzeros; E PolicyEngine-shaped, 21,000 x 5.16M at 413M nonzeros, given
as column blocks) and each backend that fits (``dense`` when the dense matrix fits in a quarter of
the device memory, ``sparse`` = segment sums over COO, ``ell`` = sliced ELLPACK, and the one
``backend="auto"`` picks), it prints

* the backend ``auto`` chooses on this device;
* compile time: a first 1-epoch ``calibrate`` minus a second one;
* ms/epoch: the best of two fits of a fixed number of epochs, without polish;
* peak device memory (``device.memory_stats()``; on CPU the process's peak host memory growth);
* the memory-bandwidth floor: the bytes of M's arrays that one epoch's two products read (each
  orientation once for ``ell``; the same arrays twice for ``dense`` and ``sparse``) divided by the
  device's peak bandwidth (datasheet value for known devices, else the measured copy bandwidth,
  which is also printed), and ms/epoch over that floor.

It stops starting new measurements after ``--budget`` seconds (default 420, so the whole script
stays under 8 minutes on an H200 including start-up and matrix building); skipped rows say so.
Workload E runs first (it carries the goal: at most 50 ms/epoch on an H200) and through the
sharded path on one device (``ColumnBlocks`` split into 8 chunks), as a production run would.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
from _common import machine
from calibration import SETTINGS, workload, workload_d, workload_e

import l0jax
from l0jax._src.calibration import sharding
from l0jax._src.operators import as_operator, choose_backend

# Datasheet peak memory bandwidth, bytes/s, by jax device_kind (substring match, first wins).
PEAK_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("A100-SXM4-80GB", 2.04e12),
    ("A100 80GB", 1.94e12),
    ("A100", 1.56e12),
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
    ("TPU v5p", 2.76e12),
    ("TPU v5 lite", 0.819e12),
    ("TPU v5e", 0.819e12),
    ("TPU v4", 1.2e12),
    ("TPU v6", 1.64e12),
]
EPOCHS = {"B": 200, "C": 200, "D": 50, "E": 20}


def copy_bandwidth() -> float:
    """Measured bytes/s of ``x + 1`` on a 256 MiB float32 array (one read and one write per element)."""
    x = jnp.ones((1 << 26,), jnp.float32)
    f = jax.jit(lambda x: x + 1.0)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * x.nbytes / best


def peak_bandwidth(kind: str) -> tuple[float, str]:
    for name, bw in PEAK_BANDWIDTH:
        if name.lower() in kind.lower():
            return bw, "datasheet"
    return copy_bandwidth(), "measured copy"


def device_peak() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _host_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def _reset_host_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def bytes_read(op, nnz: int) -> int:
    """Bytes of the operator's arrays one ``M @ w`` plus one ``M.T @ r`` read (``"scipy"``: the CSR of
    M and of M.T on the host, values and column indices).
    """
    if op.backend == "scipy":
        return 2 * 8 * nnz
    total = sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(op))
    return total if op.backend == "ell" else 2 * total


def time_fit(M, y, kw: dict, epochs: int) -> tuple[float, float]:
    def run(n, **extra):
        t = time.perf_counter()
        l0jax.calibrate(M, y, key=0, epochs=n, warn_targets=False, **kw, **extra)
        return time.perf_counter() - t

    first = run(1, log_every=1, polish_epochs=1)
    compile_s = first - run(1, log_every=1, polish_epochs=1)
    ms = min(run(epochs, log_every=epochs, polish=False) for _ in range(2)) / epochs * 1e3
    return compile_s, ms


def matrices(name: str, small: bool):
    """``(M, y, nonzeros, description)``; E as ``ColumnBlocks``."""
    if name == "E":
        shape = dict(base=1_200, districts=43, states=5) if small else {}
        blocks, y, info = workload_e(**shape)
        return (
            blocks,
            y,
            info["nnz"],
            f"{info['m']:,} x {info['n']:,}, {info['nnz'] / 1e6:.0f}M nonzeros (column blocks)",
        )
    if name == "D":
        M, y = workload_d(m=2_000, n=200_000, districts=40) if small else workload_d()
    else:
        M, y = workload(name)
    return M, y, M.nnz, f"{M.shape[0]:,} x {M.shape[1]:,}, {M.nnz / 1e6:.1f}M nonzeros"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="shrink D and E (a CPU test of the script)")
    parser.add_argument("--workloads", default="E,B,C,D")
    parser.add_argument(
        "--budget", type=float, default=420.0, help="seconds after which no new measurement starts"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    device = jax.devices()[0]
    platform = device.platform
    bw, source = peak_bandwidth(device.device_kind)
    print(f"date {time.strftime('%Y-%m-%d %H:%M %Z')}; {machine()}")
    print(
        f"device {device.device_kind} ({platform}), {jax.device_count()} device(s); bandwidth for the floor "
        f"{bw / 1e9:,.0f} GB/s ({source}); measured copy bandwidth {copy_bandwidth() / 1e9:,.0f} GB/s"
    )
    mem = (device.memory_stats() or {}).get("bytes_limit")
    print(
        f"{'':2} {'workload':<44} {'backend':>8} {'auto':>5} | {'compile s':>9} {'ms/epoch':>9} | "
        f"{'peak mem GiB':>12} | {'MiB read/epoch':>14} {'floor ms':>8} {'x floor':>7}"
    )
    for name in [w.strip().upper() for w in args.workloads.split(",") if w.strip()]:
        if time.perf_counter() - start > args.budget:
            print(f"{name}: skipped (budget of {args.budget:.0f} s spent)")
            continue
        t = time.perf_counter()
        M, y, nnz, desc = matrices(name, args.small)
        built = time.perf_counter() - t
        kw = dict(SETTINGS[name])
        if name == "E":  # the production path: blocks split into chunks on one device
            layout = sharding.resolve_devices(1, M.n)
            auto = sharding.shard_operator(M, layout, m=y.size).backend
            options = [auto] + [b for b in ("sparse", "ell") if b != auto]
        else:
            auto = choose_backend(M.shape, M.nnz, platform=platform)
            fits = M.shape[0] * M.shape[1] * 4 <= (mem or 8 << 30) / 4
            options = [auto] + [b for b in ("dense", "sparse", "ell") if b != auto and (b != "dense" or fits)]
        for backend in options:
            if time.perf_counter() - start > args.budget:
                print(
                    f"{'':2} {name + ': ' + desc:<44} {backend:>8} skipped (budget of {args.budget:.0f} s spent)"
                )
                continue
            _reset_host_peak()
            host0 = _host_kib("VmRSS")
            t = time.perf_counter()
            if name == "E":
                op = sharding.shard_operator(M, layout, m=y.size, backend=backend)
            else:
                op = as_operator(M, backend=backend)
            jax.block_until_ready(jax.tree_util.tree_leaves(op))
            build_s = time.perf_counter() - t
            compile_s, ms = time_fit(op, y, kw, max(3, EPOCHS[name] // (5 if args.small else 1)))
            peak = device_peak()
            peak_txt = (
                f"{peak / 2**30:12.2f}"
                if peak is not None
                else f"{(_host_kib('VmHWM') - host0) / 2**20:8.2f} host"
            )
            nbytes = bytes_read(op, nnz)
            floor = nbytes / bw * 1e3
            print(
                f"{'':2} {name + ': ' + desc:<44} {backend:>8} {'yes' if backend == auto else '':>5} | "
                f"{compile_s:9.2f} {ms:9.2f} | {peak_txt} | {nbytes / 2**20:14,.0f} {floor:8.3f} {ms / floor:7.1f}"
                f"   (matrix {built:.0f} s, operator {build_s:.0f} s)",
                flush=True,
            )
            del op
        del M
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
