"""``l0jax demo``: survey calibration on the World Bank household data bundled with svy.

Two tasks on real survey data (``l0jax.demo.world_bank_survey``), with exact census totals
as targets: households by size, rooms, electricity, water source, toilet, national quintile,
region x urban/rural, and the totals of persons and of spending (47 targets).

(a) Calibrate the 825-household sample: weights that hit every census total, kept close to the
    design weights by the raking distance, no gates (every sampled household keeps a weight).
(b) Select a small subset of the 57,867 census households (keep-K mode) whose calibrated weights
    still hit the totals.

It prints a table (households kept, targets met, largest error, untargeted spending by district,
time) and writes a plot of the target errors (matplotlib, Agg backend) under ``out_dir``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import l0jax
from l0jax._src.calibration.diagnostics import relative_error
from l0jax.demo._world_bank import SurveyProblem, district_totals, world_bank_survey

SAMPLE_TOLERANCE = 0.005  # (a) must hit every target within 0.5%
CENSUS_TOLERANCE = 0.02  # (b) within 2%
CENSUS_MAX_SHARE = 0.05  # (b) keeps at most 5% of the census households


def calibrate_sample(problem: SurveyProblem, *, epochs: int = 1000, seed: int = 0) -> l0jax.CalibrationResult:
    """Task (a): the sample calibrated to the census totals, close to its design weights (raking).

    Args:
      problem: ``world_bank_survey("sample")``: a matrix of shape (n_targets, n_households) and
        design weights of shape (n_households,).
      epochs: Adam epochs.
      seed: PRNG seed.

    Returns:
      The ``CalibrationResult``; every household keeps a weight (no gates), weights of shape
      (n_households,).
    """
    return l0jax.calibrate(
        problem.matrix,
        problem.targets,
        key=seed,
        use_gates=False,
        init_weights=problem.initial_weights,
        distance="raking",
        distance_strength=1e-3,
        loss_type="relative",
        lr=0.01,
        epochs=epochs,
    )


def select_census(
    problem: SurveyProblem, *, keep: int = 1000, epochs: int = 1000, seed: int = 0
) -> l0jax.CalibrationResult:
    """Task (b): keep ``keep`` census households whose calibrated weights hit the totals (keep-K mode, small L2).

    Args:
      problem: ``world_bank_survey("census")``: a matrix of shape (n_targets, n_households).
      keep: K, households to keep.
      epochs: Adam epochs (the budget falls to K over the first half).
      seed: PRNG seed.

    Returns:
      The ``CalibrationResult``: weights of shape (n_households,), ``keep`` of them non-zero.
    """
    # A small L2 on the weights spreads the total over the kept households (Kish effective sample
    # size about 750 instead of 260 of 1,000), which helps untargeted totals (spending by district).
    return l0jax.calibrate(
        problem.matrix,
        problem.targets,
        key=seed,
        target_active=keep,
        lambda_l2=1e-8,
        loss_type="relative",
        lr=0.1,
        epochs=epochs,
    )


def _district_error(problem: SurveyProblem, weights: np.ndarray) -> tuple[float, float]:
    _, est, truth = district_totals(problem, weights, "tot_exp")
    err = np.abs(est / truth - 1.0)
    return float(err.mean()), float(err.max())


def _figures(
    problem: SurveyProblem, res: l0jax.CalibrationResult, rel: np.ndarray, tolerance: float, seconds: float
) -> dict[str, Any]:
    """What the demo reports of one fit: households kept, targets met, errors, time."""
    district_mean, district_max = _district_error(problem, res.weights)
    return dict(
        kept=res.active_count,
        households=res.weights.size,
        max_error=float(np.abs(rel).max()),
        met=int(np.sum(np.abs(rel) <= tolerance)),
        tolerance=tolerance,
        seconds=seconds,
        min_weight=float(res.weights.min()),
        district_mean=district_mean,
        district_max=district_max,
    )


def _plot_errors(
    path: Path, names: list[str], series: dict[str, np.ndarray], tolerances: dict[str, float]
) -> None:
    """Horizontal bars of the relative error of every target, one panel per series, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 0.22 * len(names) + 1.8), sharey=True)
    y = np.arange(len(names))
    for ax, (label, rel) in zip(np.atleast_1d(axes), series.items(), strict=True):
        ax.barh(
            y, 100 * rel, color=np.where(np.abs(rel) <= tolerances.get(label, np.inf), "tab:green", "tab:red")
        )
        tol = tolerances.get(label)
        if tol is not None:
            for s in (-1, 1):
                ax.axvline(100 * s * tol, color="grey", lw=0.8, ls="--")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("relative error (%)")
    axes = np.atleast_1d(axes)
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("World Bank survey (svy): error on each census total", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    out_dir: str | Path = "out",
    *,
    keep: int = 1000,
    epochs: int = 1000,
    seed: int = 0,
    plot: bool = True,
    printer: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Runs both tasks, prints the table and writes the plot; returns the figures.

    Args:
      out_dir: folder for ``demo_target_errors.png`` (created if needed).
      keep: K for the census selection.
      epochs: epochs of each fit.
      seed: PRNG seed.
      plot: write the plot.
      printer: where lines go (``print`` by default).

    Returns:
      A dict with ``"design"`` (the sample's design weights), ``"sample"`` (task a) and
      ``"census"`` (task b), each holding ``kept``, ``households``, ``max_error``, ``met``,
      ``tolerance``, ``district_mean``, ``district_max`` and ``seconds`` (None for the design
      weights); the two fits add ``min_weight``, and task (a) ``ratio`` (the smallest and largest
      calibrated-to-design weight ratio); plus ``"plot"`` (the file written, or None).
    """
    printer(
        f"l0jax {l0jax.__version__} on {jax.default_backend()}: survey calibration on the World Bank "
        f"household data bundled with svy"
    )
    t0 = time.perf_counter()
    sample = world_bank_survey("sample")
    census = world_bank_survey("census")
    load_s = time.perf_counter() - t0
    m = len(sample.target_names)
    printer(
        f"{m} census totals as targets (households by size, rooms, electricity, water, toilet, quintile, "
        f"region x urban/rural; persons; spending); data loaded in {load_s:.1f} s\n"
    )

    figures: dict[str, Any] = {}

    design_rel = relative_error(sample.matrix @ sample.initial_weights, sample.targets)
    figures["design"] = dict(
        kept=sample.matrix.shape[1],
        households=sample.matrix.shape[1],
        max_error=float(np.abs(design_rel).max()),
        met=int(np.sum(np.abs(design_rel) <= SAMPLE_TOLERANCE)),
        tolerance=SAMPLE_TOLERANCE,
        seconds=None,
    )
    figures["design"]["district_mean"], figures["design"]["district_max"] = _district_error(
        sample, sample.initial_weights
    )

    t0 = time.perf_counter()
    res_a = calibrate_sample(sample, epochs=epochs, seed=seed)
    a_rel = relative_error(res_a.predictions, sample.targets)
    figures["sample"] = _figures(sample, res_a, a_rel, SAMPLE_TOLERANCE, time.perf_counter() - t0)
    ratio = res_a.weights / sample.initial_weights
    ratio_range = (float(ratio.min()), float(ratio.max()))
    figures["sample"]["ratio"] = ratio_range

    t0 = time.perf_counter()
    res_b = select_census(census, keep=keep, epochs=epochs, seed=seed)
    b_rel = relative_error(res_b.predictions, census.targets)
    figures["census"] = _figures(census, res_b, b_rel, CENSUS_TOLERANCE, time.perf_counter() - t0)

    head = (
        f"{'task':<34} {'households kept':>16} {'targets met':>19} {'max |error|':>11} "
        f"{'district spending*':>18} {'time':>7}"
    )
    printer(head)
    printer("-" * len(head))
    rows = [
        ("design weights of the sample", figures["design"]),
        ("(a) sample calibrated (raking)", figures["sample"]),
        (f"(b) census selection, K = {keep:,}", figures["census"]),
    ]
    for label, f in rows:
        kept = f"{f['kept']:,} of {f['households']:,}"
        met = f"{f['met']}/{m} within {f['tolerance']:.1%}"
        secs = "" if f["seconds"] is None else f"{f['seconds']:.1f} s"
        printer(
            f"{label:<34} {kept:>16} {met:>19} {f['max_error']:>11.3%} {f['district_mean']:>18.1%} {secs:>7}"
        )
    printer(
        "\n* untargeted: mean |relative error| of the total spending of each of the 23 districts against the census "
        "(the sample covers few households per district)."
    )
    printer(
        f"(a) weights stay positive and close to the design weights: w/d from {ratio_range[0]:.2f} "
        f"to {ratio_range[1]:.2f}."
    )
    share = figures["census"]["kept"] / figures["census"]["households"]
    printer(
        f"(b) keeps {share:.2%} of the census households (goal: at most {CENSUS_MAX_SHARE:.0%}); "
        f"{figures['census']['met']} of {m} targets within {CENSUS_TOLERANCE:.0%}."
    )

    figures["plot"] = None
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            printer("(no plot: matplotlib is not installed; pip install 'l0jax[demo]')")
            plot = False
    if plot:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "demo_target_errors.png"
        _plot_errors(
            path,
            sample.target_names,
            {
                "design weights (sample)": design_rel,
                "(a) calibrated sample": a_rel,
                f"(b) {figures['census']['kept']:,} census households": b_rel,
            },
            {
                "design weights (sample)": SAMPLE_TOLERANCE,
                "(a) calibrated sample": SAMPLE_TOLERANCE,
                f"(b) {figures['census']['kept']:,} census households": CENSUS_TOLERANCE,
            },
        )
        figures["plot"] = str(path)
        printer(f"Plot of the target errors: {path}")
    return figures
