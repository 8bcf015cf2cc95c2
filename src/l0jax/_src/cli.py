"""The ``l0jax`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _core_demo(args: argparse.Namespace) -> int:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import l0jax

    n = args.draws
    print(f"l0jax {l0jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})")
    print(f"Hard-concrete gates, {n:,} draws per row (seed {args.seed}), against the closed forms:")
    print(f"{'log_alpha':>9} {'beta':>6} | {'P(z=0)':>8} {'exact':>8} | {'P(z=1)':>8} {'exact':>8} | "
          f"{'P(z!=0)':>8} {'exact':>8}")
    key = jax.random.key(args.seed)
    sample = jax.jit(l0jax.hard_concrete)
    for log_alpha in (-2.0, 0.0, 2.0):
        for beta in (0.25, 2 / 3):
            key, sub = jax.random.split(key)
            z = np.asarray(sample(sub, jnp.full((n,), log_alpha), beta))
            la = jnp.float32(log_alpha)
            print(f"{log_alpha:9.2f} {beta:6.3f} | {np.mean(z == 0):8.4f} {float(l0jax.prob_zero(la, beta)):8.4f} | "
                  f"{np.mean(z == 1):8.4f} {float(l0jax.prob_one(la, beta)):8.4f} | "
                  f"{np.mean(z != 0):8.4f} {float(l0jax.prob_nonzero(la, beta)):8.4f}")
    print("\nTemperature schedules 2.0 -> 0.1 over 100 steps (as l0-python's TemperatureScheduler):")
    steps = (0, 25, 50, 75, 100)
    print(f"{'kind':>12} " + " ".join(f"{s:>7d}" for s in steps))
    for kind in ("exponential", "linear", "cosine"):
        schedule = l0jax.temperature_schedule(2.0, 0.1, 100, kind)
        print(f"{kind:>12} " + " ".join(f"{float(schedule(s)):7.4f}" for s in steps))
    t0 = time.perf_counter()
    log_alpha = jnp.zeros((1_000_000,))
    jax.block_until_ready(sample(key, log_alpha, 0.5))
    print(f"\nSampled 1,000,000 gates in {1e3 * (time.perf_counter() - t0):.1f} ms (including compilation).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser of the ``l0jax`` command."""
    parser = argparse.ArgumentParser(prog="l0jax", description="L0 regularisation with hard-concrete gates in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demonstration on bundled data and print what it did")
    demo.add_argument("--draws", type=int, default=200_000, help="Monte Carlo draws per row")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    demo.set_defaults(func=_core_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``l0jax`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
