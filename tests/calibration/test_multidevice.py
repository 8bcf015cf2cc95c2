"""Sharded calibration on several devices, in subprocesses (XLA fixes the device count at start-up).

* ``tests/calibration/multidevice/``: the sharded tests, run by pytest in a subprocess with 8 emulated CPU
  devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``); this process keeps its one.
* Two processes with two CPU devices each, talking through JAX's CPU collectives (gloo), against
  one process with four devices.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKER = HERE / "multidevice" / "gloo_worker.py"


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["L0JAX_MULTIDEVICE"] = "1"
    env.pop("JAX_PLATFORMS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_sharded_suite_on_eight_emulated_devices():
    out = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "multidevice"), "-q", "-p", "no:cacheprovider", "-x"],
        capture_output=True,
        text=True,
        env=_env(8),
        cwd=HERE.parent,
        timeout=1800,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1], out.stdout[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_over_gloo_equal_one_process_on_four_devices(tmp_path):
    port = str(_free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), "2", str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(2),
        )
        for i in range(2)
    ]
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), "1", "0", "0"],
        capture_output=True,
        text=True,
        env=_env(4),
        timeout=600,
        check=False,
    )
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert single.returncode == 0, single.stdout + single.stderr
    for w, log in zip(workers, logs, strict=True):
        assert w.returncode == 0, log[-4000:]
    one = np.load(tmp_path / "single_0.npz")
    for i in range(2):
        two = np.load(tmp_path / f"multi_{i}.npz")
        # Every process returns the whole result; the checkpoint was written once, by process 0.
        np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-5, atol=0)
        np.testing.assert_array_equal(two["active"], one["active"])
        np.testing.assert_allclose(two["predictions"], one["predictions"], rtol=1e-5)
    assert (tmp_path / "multi.ckpt.npz").is_file()
    # Households 0-503 live on process 0's two devices, 504-1,007 (with the padding) on process 1's:
    # each built only the blocks meeting its own columns.
    assert list(np.load(tmp_path / "multi_0.npz")["built"]) == [0, 1, 2]
    assert list(np.load(tmp_path / "multi_1.npz")["built"]) == [2, 3]
    rows = (tmp_path / "multi.log.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 60  # header, 60 targets at epochs 30 and 60: written once
