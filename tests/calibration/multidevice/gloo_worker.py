"""One process of tests/calibration/test_multidevice.py's gloo check: ``gloo_worker.py OUT PROCESSES ID PORT``.

With PROCESSES = 2, joins a two-process run through ``jax.distributed.initialize`` with JAX's CPU
collectives (gloo); with 1 runs alone. Either way it calibrates one problem on four devices (of
all processes) with a checkpoint and a CSV log, and saves what it got back.
"""

import sys
from pathlib import Path

import jax

out, processes, pid, port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=processes, process_id=pid
    )

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import l0jax  # noqa: E402

assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(0)
M = sp.random(60, 1003, density=0.2, format="csr", random_state=rng, dtype=np.float32)
w = rng.lognormal(0.0, 0.5, 1003)
w[rng.random(1003) < 0.5] = 0.0
y = M @ w
name = "multi" if processes > 1 else "single"
# Blocks built on demand: each process builds only the columns of its own devices.
cuts = [0, 250, 500, 750, 1003]
built = set()
blocks = l0jax.ColumnBlocks(
    lambda i: built.add(i) or M[:, cuts[i] : cuts[i + 1]], widths=[250, 250, 250, 253]
)
res = l0jax.calibrate(
    blocks,
    y,
    key=0,
    devices=4,
    lambda_l0=1e-3,
    lr=0.05,
    epochs=60,
    log_every=30,
    loss_type="relative",
    checkpoint_path=out / f"{name}.ckpt.npz",
    callbacks=[l0jax.CsvLog(out / f"{name}.log.csv")],
)
np.savez(
    out / f"{name}_{pid}.npz",
    weights=res.weights,
    active=res.active,
    predictions=res.predictions,
    built=sorted(built),
)
