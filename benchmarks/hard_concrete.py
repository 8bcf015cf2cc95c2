"""Throughput of hard-concrete sampling + expected-L0 penalty for 10^7 gates, against l0-python.

Run: ``.venv/bin/python benchmarks/hard_concrete.py [--gates N]``. Both libraries time the same
work on the same machine in this run: (a) sample gates and compute the penalty; (b) the same plus
the gradient with respect to the gate logits (one training step's worth of gate work).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import l0jax
from _common import best_time, machine, run_reference

REFERENCE = r"""
import json, sys, time, torch
from l0 import HardConcrete
torch.set_num_threads(2)
n = json.load(sys.stdin)["n"]
gate = HardConcrete(n, temperature=2/3, init_mean=0.5)
gate.train()
def fwd():
    with torch.no_grad():
        z = gate()
        return z.sum() + gate.get_penalty()
def fwd_bwd():
    gate.zero_grad()
    (gate().sum() + gate.get_penalty()).backward()
def best(fn, repeats=5, min_time=0.2):
    b = float("inf")
    for _ in range(repeats):
        k, s = 0, time.perf_counter()
        while True:
            fn(); k += 1
            e = time.perf_counter() - s
            if e >= min_time: break
        b = min(b, e / k)
    return b
fwd(); fwd_bwd()
print(json.dumps({"forward": best(fwd), "forward_backward": best(fwd_bwd), "torch": torch.__version__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gates", type=int, default=10_000_000)
    args = parser.parse_args()
    n = args.gates
    print(f"machine: {machine()}")
    print(f"gates: {n:,}, temperature 2/3, float32")

    def objective(log_alpha, key, temperature):
        return jnp.sum(l0jax.hard_concrete(key, log_alpha, temperature)) + l0jax.l0_penalty(log_alpha, temperature)

    forward = jax.jit(objective)
    forward_backward = jax.jit(jax.grad(objective))
    log_alpha = jnp.zeros((n,), jnp.float32)
    key, t = jax.random.key(0), jnp.float32(2 / 3)
    ours = {
        "forward": best_time(lambda: forward(log_alpha, key, t).block_until_ready()),
        "forward_backward": best_time(lambda: forward_backward(log_alpha, key, t).block_until_ready()),
    }
    ref = run_reference(REFERENCE, {"n": n})
    print(f"{'work':<34} {'l0jax ms':>10} {'l0-python ms':>13} {'speed-up':>9} {'Mgates/s (l0jax)':>17}")
    for name, label in [("forward", "sample + penalty"), ("forward_backward", "sample + penalty + gradient")]:
        theirs = ref[name] if ref else float("nan")
        print(f"{label:<34} {1e3 * ours[name]:10.2f} {1e3 * theirs:13.2f} {theirs / ours[name]:8.2f}x "
              f"{n / ours[name] / 1e6:17.1f}")
    if ref:
        print(f"reference: l0-python HardConcrete on torch {ref['torch']} (CPU, 2 threads)")


if __name__ == "__main__":
    main()
