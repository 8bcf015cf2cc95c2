"""Throughput of hard-concrete sampling + expected-L0 penalty for 10^7 gates, against l0-python.

Run: ``.venv/bin/python benchmarks/hard_concrete.py [--gates N]``. Both libraries time the same
work on the same machine in this run: (a) sample gates and compute the penalty; (b) the same plus
the gradient with respect to the gate logits (one training step's worth of gate work). l0jax runs
with both noise sources: ``noise="random"`` (``jax.random``, threefry) and ``noise="hash"`` (the
counter-based hash). The memory floor is the time of one pass that reads the gate logits and
writes an array of the same size (``2 * x + 1``), the least any sampler must do.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _common import best_time, machine, run_reference

import l0jax

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

    log_alpha = jnp.zeros((n,), jnp.float32)
    key, t = jax.random.key(0), jnp.float32(2 / 3)
    floor_fn = jax.jit(lambda x: 2 * x + 1)
    floor = best_time(lambda: floor_fn(log_alpha).block_until_ready())
    ours = {}
    for noise in l0jax_noise_kinds():

        def objective(log_alpha, key, temperature, noise=noise):
            gates = l0jax.hard_concrete(key, log_alpha, temperature, noise=noise)
            return jnp.sum(gates) + l0jax.l0_penalty(log_alpha, temperature)

        forward, forward_backward = jax.jit(objective), jax.jit(jax.grad(objective))
        ours[noise] = {
            "forward": best_time(lambda f=forward: f(log_alpha, key, t).block_until_ready()),
            "forward_backward": best_time(
                lambda f=forward_backward: f(log_alpha, key, t).block_until_ready()
            ),
        }
    ref = run_reference(REFERENCE, {"n": n})
    print(f"memory floor (read {n:,} float32, write {n:,}): {1e3 * floor:.2f} ms")
    print(
        f"{'work':<30} {'noise':<7} {'l0jax ms':>9} {'l0-python ms':>13} {'speed-up':>9} "
        f"{'x floor':>8} {'Mgates/s':>9}"
    )
    for name, label in [("forward", "sample + penalty"), ("forward_backward", "sample + penalty + gradient")]:
        theirs = ref[name] if ref else float("nan")
        for noise, times in ours.items():
            mine = times[name]
            print(
                f"{label:<30} {noise:<7} {1e3 * mine:9.2f} {1e3 * theirs:13.2f} {theirs / mine:8.2f}x "
                f"{mine / floor:7.2f}x {n / mine / 1e6:9.1f}"
            )
    if ref:
        print(f"reference: l0-python HardConcrete on torch {ref['torch']} (CPU, 2 threads)")


def l0jax_noise_kinds() -> tuple[str, ...]:
    """The noise sources ``hard_concrete`` offers, in the order the table lists them."""
    from l0jax._src.hard_concrete import NOISE_KINDS

    return NOISE_KINDS


if __name__ == "__main__":
    main()
