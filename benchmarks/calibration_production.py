"""Census selection: keep a few of the 57,867 World Bank census households, hit the census totals.

Run: ``.venv/bin/python benchmarks/calibration_production.py [--keep 1000]
[--epochs 1000] [--lambdas 1e-4,3e-4,1e-3,3e-3] [--skip-reference]``
(``L0_PYTHON=/path/to/python`` names the l0-python environment; see ``_common.l0_python``).

The task: the 47 exact census totals of ``l0jax.demo.world_bank_survey("census")``
(households by size, rooms, electricity, water, toilet, quintile, region x urban/rural; persons;
spending) as targets, all 57,867 census households as the pool, weights starting at 1.

* l0jax: one fit in keep-K mode (``target_active=K``), no lambda search.
* l0-python 0.6 (torch CPU, 2 threads): ``SparseCalibrationWeights`` with the same epochs,
  learning rate, temperature and loss, for each lambda_l0 of a small grid; its "best lambda" is the
  one whose returned (deterministic) weights keep at most 5% of the households with the smallest
  largest target error.

For each fit: households kept, largest and mean relative target error, the error on untargeted
census totals (spending and persons of each of the 23 districts: mean and largest relative
error), and wall time (l0jax: first call, with compilation, and a second call).
``benchmarks/calibration.py --census`` runs the same comparison; it lives in its own file because it
needs the World Bank data (the ``demo`` extra) and none of the synthetic workloads.
Timings on a shared machine are noisy; the script prints everything needed to judge them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, run_calibration_reference

import l0jax
from l0jax.demo import district_totals, world_bank_survey

MAX_SHARE = 0.05
# Both libraries get the same settings; the small L2 on the weights (l0-python's lambda_l2) spreads the
# total over the kept households, which helps the untargeted totals.
SETTINGS = {
    "lr": 0.1,
    "temperature": 2 / 3,
    "init_keep_prob": 0.5,
    "loss_type": "relative",
    "lambda_l2": 1e-8,
}

# Runs after _common.CALIBRATION_PRELUDE (M, y, kw = the settings, cfg = the payload).
REFERENCE = r"""
out = {"torch": torch.__version__, "fits": []}
for lam in cfg["lambdas"]:
    model = SparseCalibrationWeights(n_features=M.shape[1], beta=kw["temperature"], init_keep_prob=kw["init_keep_prob"],
                                     seed=0)
    t = time.perf_counter()
    model.fit(M, y, lambda_l0=lam, lambda_l2=kw["lambda_l2"], lr=kw["lr"], epochs=cfg["epochs"],
              loss_type=kw["loss_type"], verbose=False)
    seconds = time.perf_counter() - t
    with torch.no_grad():
        w = model.get_weights(deterministic=True).cpu().numpy().astype(np.float64)
    np.save(cfg["weights"].format(lam=lam), w)
    out["fits"].append({"lambda_l0": lam, "seconds": seconds})
    print(f"l0-python lambda_l0={lam:g}: {seconds:.0f} s", file=sys.stderr, flush=True)
print(json.dumps(out))
"""


def evaluate(problem, weights: np.ndarray) -> dict[str, float]:
    """Kept households, target errors and untargeted district errors of a weight vector."""
    w = np.asarray(weights, np.float64)
    rel = np.abs(problem.matrix @ w / problem.targets - 1.0)
    out = {
        "kept": int(np.count_nonzero(w > 0)),
        "max_error": float(rel.max()),
        "mean_error": float(rel.mean()),
    }
    for column, label in (("tot_exp", "spending"), ("hhsize", "persons")):
        _, est, truth = district_totals(problem, w, column)
        err = np.abs(est / truth - 1.0)
        out[f"{label}_mean"] = float(err.mean())
        out[f"{label}_max"] = float(err.max())
    return out


def run_l0jax(problem, keep: int, epochs: int) -> tuple[dict[str, float], float, float]:
    times = []
    for _ in range(2):
        t = time.perf_counter()
        res = l0jax.calibrate(
            problem.matrix, problem.targets, key=0, target_active=keep, epochs=epochs, **SETTINGS
        )
        times.append(time.perf_counter() - t)
    return evaluate(problem, res.weights), times[0], times[1]


def run_l0_python(
    problem, lambdas: list[float], epochs: int
) -> list[tuple[float, dict[str, float], float]] | None:
    with tempfile.TemporaryDirectory() as tmp:
        pattern = os.path.join(tmp, "w_{lam}.npy")
        out = run_calibration_reference(
            REFERENCE,
            tmp,
            problem.matrix,
            problem.targets,
            {"settings": SETTINGS, "lambdas": lambdas, "epochs": epochs, "weights": pattern},
            timeout=12 * 3600,
        )
        if out is None:
            return None
        return [
            (f["lambda_l0"], evaluate(problem, np.load(pattern.format(lam=f["lambda_l0"]))), f["seconds"])
            for f in out["fits"]
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=int, default=1000, help="K, households l0jax keeps")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--lambdas", default="1e-4,3e-4,1e-3,3e-3", help="l0-python's lambda_l0 grid")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)
    lambdas = [float(x) for x in args.lambdas.split(",")]

    print(f"machine: {machine()}")
    census = world_bank_survey("census")
    n = census.matrix.shape[1]
    print(
        f"census selection: {census.matrix.shape[0]} targets x {n:,} households ({census.matrix.nnz:,} nonzeros); "
        f"{args.epochs} epochs, lr {SETTINGS['lr']}, temperature {SETTINGS['temperature']:.3f}, keep-probability "
        f"{SETTINGS['init_keep_prob']}, lambda_l2 {SETTINGS['lambda_l2']:g}, relative loss; "
        f"goal: at most {MAX_SHARE:.0%} kept "
        f"({int(MAX_SHARE * n):,}), every target within 2%\n"
    )

    head = (
        f"{'fit':<30} {'kept':>7} {'share':>6} | {'max err':>8} {'mean err':>8} | {'spend/district':>15} "
        f"{'persons/district':>16} | {'time s':>7}"
    )
    print(head)
    print(f"{'':<30} {'':>7} {'':>6} | {'targets':>17} | {'mean / max':>15} {'mean / max':>16} |")
    print("-" * len(head))

    def line(label: str, f: dict[str, float], seconds: str) -> None:
        print(
            f"{label:<30} {f['kept']:>7,} {f['kept'] / n:>6.2%} | {f['max_error']:>8.3%} {f['mean_error']:>8.3%} | "
            f"{f['spending_mean']:>6.1%} / {f['spending_max']:>6.1%} "
            f"{f['persons_mean']:>7.1%} / {f['persons_max']:>6.1%} "
            f"| {seconds:>7}"
        )

    mine, first, second = run_l0jax(census, args.keep, args.epochs)
    line(f"l0jax target_active={args.keep:,}", mine, f"{second:.1f}")
    print(f"{'':<30} (first call, with compilation: {first:.1f} s; one fit, no lambda search)")
    if args.skip_reference:
        return
    fits = run_l0_python(census, lambdas, args.epochs)
    if fits is None:
        return
    total = 0.0
    for lam, f, seconds in fits:
        total += seconds
        line(f"l0-python lambda_l0={lam:g}", f, f"{seconds:.1f}")
    eligible = [(f["max_error"], lam, f, s) for lam, f, s in fits if f["kept"] <= MAX_SHARE * n]
    if eligible:
        _, lam, f, seconds = min(eligible, key=lambda e: e[0])
        print(
            f"\nl0-python's best lambda_l0 (at most {MAX_SHARE:.0%} kept, smallest largest target error): {lam:g}: "
            f"{f['kept']:,} kept, largest target error {f['max_error']:.3%} (l0jax: {mine['kept']:,} kept, "
            f"{mine['max_error']:.3%})."
        )
    else:
        print(f"\nno lambda_l0 of the grid kept at most {MAX_SHARE:.0%} of the households.")
    print(
        f"time: l0jax {second:.1f} s for one fit; l0-python {total:.0f} s for its search of {len(fits)} fits "
        f"({total / len(fits):.0f} s per fit, {total / len(fits) / second:.0f}x l0jax's fit)."
    )


if __name__ == "__main__":
    main()
