"""Exact classical calibration: ``calibrate_classical`` against a NumPy Newton loop and the L0 engine.

Run: ``.venv/bin/python benchmarks/classical.py [--records 1000000] [--engine-epochs 2000]``

Problems:

* the World Bank sample (svy's ``hld_sample_wb_2023``): 825 households, their design weights, 47
  census totals (``l0jax.demo.world_bank_survey``);
* synthetic, 1,000,000 records x 500 totals (``--records``): 10 categorical variables of 50
  levels each (the 500 totals are their margins, linearly dependent: each variable's levels sum
  to the population size, so the Newton system has rank 491), design weights lognormal(3, 0.5),
  totals from weights perturbed by a level effect per variable (so raking has an exact solution
  away from the design weights).

Each problem is calibrated by raking and by linear calibration (GREG), three ways:

* ``calibrate_classical`` (float64): the first call (with compilation) and a warm call, Newton
  iterations, the largest relative residual ``|M w - t| / t``, and the part of the warm call spent
  storing M for Newton's method on the host (``gram.gram_matrix``);
* a NumPy/scipy Newton loop, the same algorithm (Newton on the multipliers with an Armijo line
  search, scipy sparse ``M diag(v) M.T``, an eigen-decomposition pseudo-inverse): time, iterations;
* the L0 engine's distance runs (``calibrate(..., use_gates=False, distance=..., distance_strength=
  1e-3)``, float32, Adam, ``--engine-epochs`` epochs; the raking run on the synthetic problem only):
  time, epochs, the largest relative residual and the largest relative gap to the exact weights.

Timings on a shared machine are noisy: the load average at start is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
from _common import machine

import l0jax
from l0jax._src.calibration.gram import gram_matrix

# -- problems ------------------------------------------------------------------------------------


def synthetic(records: int, variables: int = 10, levels: int = 50, seed: int = 0):
    """M (variables * levels, records) of level indicators, design weights, and reachable totals."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, levels, (records, variables)) + np.arange(variables) * levels
    M = sp.csr_matrix(
        (np.ones(records * variables), (codes.ravel(), np.repeat(np.arange(records), variables))),
        shape=(variables * levels, records),
    )
    d = rng.lognormal(3.0, 0.5, records)
    effect = rng.normal(0.0, 0.15, variables * levels)  # a multiplicative effect per level
    totals = M @ (d * np.exp(effect[codes].sum(axis=1)))
    return M, totals, d


def world_bank():
    from l0jax.demo import world_bank_survey

    p = world_bank_survey("sample")
    return p.matrix, p.targets, p.initial_weights


# -- the NumPy reference ---------------------------------------------------------------------------


def numpy_newton(
    M: sp.csr_matrix, t: np.ndarray, d: np.ndarray, method: str, tol: float = 1e-10, max_iter: int = 50
) -> tuple[np.ndarray, int]:
    """Newton's method on the calibration multipliers with an Armijo line search, in NumPy/scipy."""
    F = np.exp if method == "raking" else (lambda u: 1 + u)
    dF = np.exp if method == "raking" else np.ones_like
    Phi = (lambda u: np.exp(u) - 1) if method == "raking" else (lambda u: u + 0.5 * u * u)
    MT = M.T.tocsr()
    scale = np.maximum(np.abs(t), abs(M) @ d)
    lam, u = np.zeros(M.shape[0]), np.zeros(M.shape[1])
    r = M @ (d * F(u)) - t
    it = 0
    while it < max_iter and np.max(np.abs(r) / scale) > tol:
        H = (M.multiply(d * dF(u)) @ MT).toarray()
        s = np.sqrt(np.where(np.diag(H) > 0, 1 / np.diag(H), 0))
        ev, V = np.linalg.eigh(H * s[:, None] * s[None, :])
        keep = ev > 100 * ev.size * np.finfo(float).eps * ev.max()
        step = -s * (V[:, keep] @ ((V[:, keep].T @ (s * r)) / ev[keep]))
        du = MT @ step
        h0, slope, alpha = d @ Phi(u) - lam @ t, r @ step, 1.0
        slack = 64 * np.finfo(float).eps * (d @ np.abs(Phi(u)) + np.abs(lam) @ np.abs(t))
        while alpha > 1e-18:
            with np.errstate(over="ignore"):
                h = d @ Phi(u + alpha * du) - (lam + alpha * step) @ t
            if np.isfinite(h) and h <= h0 + 1e-4 * alpha * slope + slack:
                break
            alpha /= 2
        lam, u = lam + alpha * step, u + alpha * du
        r = M @ (d * F(u)) - t
        it += 1
    return d * F(u), it


# -- measurements -----------------------------------------------------------------------------------


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def rel_residual(M, w, t):
    return float(np.max(np.abs(M @ np.asarray(w, np.float64) - t) / np.abs(t)))


def run(name: str, M, t, d, engine_epochs: int, engine_methods: tuple[str, ...]) -> None:
    print(f"\n== {name}: {M.shape[0]} totals x {M.shape[1]:,} records, {M.nnz:,} nonzeros ==")
    print(
        f"{'method':<8} {'solver':<34} {'seconds':>9} {'iterations':>11} {'max rel residual':>17} "
        f"{'max rel gap to exact':>21}"
    )
    for method in ("raking", "linear"):
        with jax.enable_x64():
            first, t_first = timed(lambda: l0jax.calibrate_classical(M, t, d, method=method))  # noqa: B023
            warm, t_warm = timed(lambda: l0jax.calibrate_classical(M, t, d, method=method))  # noqa: B023
        exact = warm.weights
        print(
            f"{method:<8} {'calibrate_classical, first call':<34} {t_first:>9.3f} {first.iterations:>11d} "
            f"{rel_residual(M, first.weights, t):>17.2e} {'':>21}"
        )
        print(
            f"{'':<8} {'calibrate_classical, warm':<34} {t_warm:>9.3f} {warm.iterations:>11d} "
            f"{rel_residual(M, exact, t):>17.2e} {'(layout ' + warm.gram.layout + ')':>21}"
        )
        with jax.enable_x64():
            _, t_store = timed(lambda: gram_matrix(M))
        print(f"{'':<8} {'  of which storing M (host)':<34} {t_store:>9.3f}")
        (w_np, it_np), t_np = timed(lambda: numpy_newton(sp.csr_matrix(M), t, d, method))  # noqa: B023
        gap = float(np.max(np.abs(w_np / exact - 1)))
        print(
            f"{'':<8} {'NumPy/scipy Newton loop':<34} {t_np:>9.3f} {it_np:>11d} {rel_residual(M, w_np, t):>17.2e} "
            f"{gap:>21.2e}"
        )
        print(f"{'':<8} {'  ratio NumPy / warm classical':<34} {t_np / t_warm:>9.1f}x")
        if method in engine_methods:
            kind = "raking" if method == "raking" else "chi2"
            res, t_eng = timed(
                lambda kind=kind: l0jax.calibrate(
                    M,
                    t,
                    key=0,
                    use_gates=False,
                    init_weights=d,
                    distance=kind,
                    distance_strength=1e-3,
                    loss_type="relative",
                    lr=0.01,
                    epochs=engine_epochs,
                    log_every=max(1, engine_epochs // 10),
                )
            )
            gap = float(np.max(np.abs(res.weights.astype(np.float64) / exact - 1)))
            print(
                f"{'':<8} {f'L0 engine, distance={kind!r}':<34} {t_eng:>9.3f} {engine_epochs:>11d} "
                f"{rel_residual(M, res.weights, t):>17.2e} {gap:>21.2e}"
            )
            print(f"{'':<8} {'  ratio engine / warm classical':<34} {t_eng / t_warm:>9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the synthetic problem")
    parser.add_argument(
        "--engine-epochs", type=int, default=2000, help="epochs of the L0 engine's distance runs"
    )
    args = parser.parse_args()
    print(machine())
    print(f"load average at start: {os.getloadavg()[0]:.2f} (timings on a shared machine are noisy)")
    run("World Bank sample", *world_bank(), args.engine_epochs, ("raking", "linear"))
    M, t, d = synthetic(args.records)
    run("synthetic", M, t, d, args.engine_epochs, ("raking",))


if __name__ == "__main__":
    main()
