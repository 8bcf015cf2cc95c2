"""Diagnostics of a calibration: per-target table, target checks, weight summary, per-epoch CSV log.

* ``target_diagnostics``: one row per target (name, target, estimate, error, relative error,
  achievable, and the estimate of the initial weights).
* ``check_targets``: warnings before a fit for targets no non-negative weights can reach, targets
  far from what the initial weights give, and negative targets.
* ``weight_summary``: the distribution of the weights (active count, quantiles, Kish effective
  sample size, ratios to the initial weights).
* ``CsvLog``: a fit callback writing, at every chunk end, one row per target in microcalibrate's
  dashboard schema (``epoch, loss, target_name, target, estimate, error, abs_error,
  rel_abs_error``), so existing dashboards read l0jax runs.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import scipy.sparse as sp
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src.calibration.blocks import CalibrationMatrix, ColumnBlocks
from l0jax._src.calibration.losses import LossType
from l0jax._src.operators import MatrixOperator, is_sparse


class CalibrationWarning(UserWarning):
    """A calibration problem that will not behave as hoped (unreachable or suspicious targets)."""


def _operator_refused(M: Any) -> None:
    if isinstance(M, MatrixOperator):
        raise ValueError("diagnostics need the matrix itself (scipy sparse or dense), not an operator.")


def _as_host_csr(M: Any) -> sp.csr_matrix:
    _operator_refused(M)
    return (M if is_sparse(M) else sp.csr_matrix(np.asarray(M, np.float64))).tocsr()


def _names(target_names: Sequence[str] | None, m: int) -> list[str]:
    if target_names is None:
        return [f"target_{i}" for i in range(m)]
    names = [str(n) for n in target_names]
    if len(names) != m:
        raise ValueError(f"target_names must have one name per target ({m}), got {len(names)}.")
    return names


def relative_error(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(estimate - target) / |target|``; the plain error where the target is 0."""
    err = np.asarray(estimate, np.float64) - np.asarray(target, np.float64)
    t = np.abs(np.asarray(target, np.float64))
    return np.divide(err, t, out=err.copy(), where=t != 0)


def _block_products(blocks: ColumnBlocks, vectors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``M @ v`` in float64 for each vector, M given by column blocks (built one at a time)."""
    out = [np.zeros(blocks.shape[0] or 0) for _ in vectors]
    for i in range(len(blocks)):
        block = blocks.block(i)
        lo, hi = int(blocks.offsets[i]), int(blocks.offsets[i + 1])
        for k, v in enumerate(vectors):
            part = np.asarray(block @ v[lo:hi], np.float64).reshape(-1)
            out[k] = part if out[k].size != part.size else out[k] + part
    return out


def _row_extremes(M: Any) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest stored value of each row (-inf/+inf for empty rows), without copying M."""
    _operator_refused(M)
    if isinstance(M, ColumnBlocks):  # the extremes of the blocks' extremes, one block at a time
        hi: np.ndarray | None = None
        lo: np.ndarray | None = None
        for i in range(len(M)):
            b = M.block(i)
            bh, bl = _row_extremes(b if is_sparse(b) else np.asarray(b))
            hi, lo = (bh, bl) if hi is None or lo is None else (np.maximum(hi, bh), np.minimum(lo, bl))
        assert hi is not None and lo is not None  # column blocks hold at least one block
        return hi, lo
    if not is_sparse(M):
        arr = np.asarray(M)
        return arr.max(axis=1).astype(np.float64), arr.min(axis=1).astype(np.float64)
    csr = M.tocsr()
    m = csr.shape[0]
    nonempty = np.diff(csr.indptr) > 0
    row_hi, row_lo = np.full(m, -np.inf), np.full(m, np.inf)
    if csr.nnz:
        starts = csr.indptr[:-1][nonempty]
        row_hi[nonempty] = np.maximum.reduceat(csr.data, starts)
        row_lo[nonempty] = np.minimum.reduceat(csr.data, starts)
    return row_hi, row_lo


def achievable(M: CalibrationMatrix, targets: ArrayLike) -> np.ndarray:
    """Whether each target can be met by non-negative weights on its own: its row has support.

    A target of 0 is always met (all weights 0); a positive one needs a positive entry in its row
    and a negative one a negative entry.

    Args:
      M: the matrix, shape (m, n) (scipy sparse, NumPy or JAX).
      targets: shape (m,).

    Returns:
      Booleans, shape (m,).
    """
    hi, lo = _row_extremes(M)
    y = checks.real_array("targets", targets).reshape(-1)
    return (y == 0) | ((y > 0) & (hi > 0)) | ((y < 0) & (lo < 0))


@dataclasses.dataclass(frozen=True)
class TargetDiagnostics:
    """Per-target results of a calibration, one entry per target (all arrays of shape (m,)).

    Attributes:
      name: target names.
      target: target values.
      estimate: ``M @ weights``.
      error: ``estimate - target``.
      rel_error: ``error / |target|`` (the error itself for zero targets).
      achievable: whether non-negative weights can reach the target (``achievable``).
      initial_estimate: ``M @ initial_weights`` (NaN when no initial weights were given).
    """

    name: list[str]
    target: np.ndarray
    estimate: np.ndarray
    error: np.ndarray
    rel_error: np.ndarray
    achievable: np.ndarray
    initial_estimate: np.ndarray

    COLUMNS = ("name", "target", "estimate", "error", "rel_error", "achievable", "initial_estimate")

    @property
    def max_abs_rel_error(self) -> float:
        """Largest ``|rel_error|`` over the targets."""
        return float(np.max(np.abs(self.rel_error)))

    def met(self, tolerance: float) -> np.ndarray:
        """Booleans: ``|rel_error| <= tolerance`` per target."""
        return np.abs(self.rel_error) <= tolerance

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (one per target, keys ``COLUMNS``)."""
        return [
            {c: (getattr(self, c)[i] if c == "name" else getattr(self, c)[i].item()) for c in self.COLUMNS}
            for i in range(len(self.name))
        ]

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the table as CSV with a header row (``COLUMNS``)."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.COLUMNS)
            for row in self.rows():
                w.writerow([row[c] if not isinstance(row[c], float) else repr(row[c]) for c in self.COLUMNS])

    def format(self, top: int | None = None, tolerance: float | None = None) -> str:
        """A text table sorted by ``|rel_error|`` (worst first).

        Args:
          top: show only the ``top`` worst targets (all when None).
          tolerance: add a column marking targets with ``|rel_error| <= tolerance``.

        Returns:
          The table as a string.
        """
        order = np.argsort(-np.abs(self.rel_error), kind="stable")[: top or len(self.name)]
        width = max(12, min(40, max(len(n) for n in self.name)))
        head = f"{'target':<{width}} {'value':>14} {'estimate':>14} {'rel. error':>10} {'initial':>10} achievable"
        if tolerance is not None:
            head += f"  within {tolerance:.2%}"
        lines = [head]
        init_rel = relative_error(self.initial_estimate, self.target)
        for i in order:
            initial = format(init_rel[i], "+.2%") if np.isfinite(init_rel[i]) else "n/a"
            line = (
                f"{self.name[i][:width]:<{width}} {self.target[i]:>14.6g} {self.estimate[i]:>14.6g} "
                f"{self.rel_error[i]:>+10.3%} {initial:>10} {'yes' if self.achievable[i] else 'NO':>10}"
            )
            if tolerance is not None:
                line += f"  {'yes' if abs(self.rel_error[i]) <= tolerance else 'NO':>{len(f'within {tolerance:.2%}')}}"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def target_diagnostics(
    M: CalibrationMatrix,
    targets: ArrayLike,
    weights: ArrayLike,
    *,
    target_names: Sequence[str] | None = None,
    initial_weights: ArrayLike | None = None,
) -> TargetDiagnostics:
    """The per-target table of a calibration.

    Args:
      M: the matrix, shape (m, n) (scipy sparse, NumPy or JAX).
      targets: shape (m,).
      weights: calibrated weights, shape (n,).
      target_names: m names (default ``target_0``, ...).
      initial_weights: initial (design) weights, shape (n,) or a scalar, for the initial estimates.

    Returns:
      A ``TargetDiagnostics``.
    """
    csr = M if isinstance(M, ColumnBlocks) else _as_host_csr(M)
    y = checks.real_array("targets", targets).reshape(-1)
    m, n = (csr.shape[0] if csr.shape[0] is not None else y.size), csr.shape[1]
    if y.shape != (m,):
        raise ValueError(f"targets must have shape ({m},), got {y.shape}.")
    w = np.asarray(weights, np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}.")
    vectors = (
        [w]
        if initial_weights is None
        else [w, np.broadcast_to(np.asarray(initial_weights, np.float64), (n,))]
    )
    products = _block_products(csr, vectors) if isinstance(csr, ColumnBlocks) else [csr @ v for v in vectors]
    est = products[0]
    init = np.full(m, np.nan) if initial_weights is None else products[1]
    return TargetDiagnostics(
        name=_names(target_names, m),
        target=y,
        estimate=est,
        error=est - y,
        rel_error=relative_error(est, y),
        achievable=achievable(csr, y),
        initial_estimate=init,
    )


def check_targets(
    M: Any,  # a CalibrationMatrix: Any because the body dispatches on its form at runtime
    targets: ArrayLike,
    *,
    target_names: Sequence[str] | None = None,
    initial_weights: ArrayLike | None = None,
    loss_type: LossType | None = None,
    far_factor: float | None = 10.0,
    warn: bool = True,
) -> list[str]:
    """Finds targets a calibration will struggle with, and warns about them.

    * unachievable: no non-negative weights meet the target (its row has no entry of its sign);
    * far from the initial estimate: ``M @ initial_weights`` is more than ``far_factor`` times
      larger or smaller than the target (often a units mistake, e.g. thousands vs units);
    * negative: legitimate for net quantities, but ``loss_type="relative"`` divides by
      ``target + 1`` and treats them oddly (use ``"relative_abs"``).

    Args:
      M: the matrix, shape (m, n).
      targets: shape (m,).
      target_names: names for the messages.
      initial_weights: shape (n,) or scalar; None skips the "far" check.
      loss_type: the loss in use; negative targets are reported only for ``"relative"`` (or when None).
      far_factor: ratio beyond which a target is "far" (None skips the check).
      warn: issue each message as a ``CalibrationWarning`` (one warning per kind).

    Returns:
      The messages (empty when all is well).
    """
    if not (is_sparse(M) or isinstance(M, ColumnBlocks)):
        _operator_refused(M)
        M = checks.real_array("M", M, None)  # nested lists too
    if len(M.shape) != 2:
        raise ValueError(f"M must be a 2-D matrix of shape (targets, households), got shape {M.shape}.")
    y = checks.real_array("targets", targets).reshape(-1)
    rows, n = M.shape[0], M.shape[1]
    m = rows if rows is not None else y.size
    if y.shape != (m,):
        raise ValueError(f"targets must have shape ({m},), one per row of M, got {y.size} values.")
    checks.check_finite("targets", y)
    names = _names(target_names, m)
    messages = []

    def listed(idx: np.ndarray) -> str:
        shown = ", ".join(names[i] for i in idx[:5])
        return shown + (f" and {idx.size - 5} more" if idx.size > 5 else "")

    reachable = achievable(M, y)
    bad = np.flatnonzero(~reachable)
    if bad.size:
        messages.append(
            f"{bad.size} target(s) cannot be reached by non-negative weights (no household in their "
            f"row has a value of the target's sign): {listed(bad)}. Their error will stay; drop them "
            f"or check the matrix."
        )
    if far_factor is not None and initial_weights is not None:
        w0 = np.broadcast_to(np.asarray(initial_weights, np.float64), (n,))
        if isinstance(M, ColumnBlocks):
            est = _block_products(M, [w0])[0]
        else:
            est = (
                np.asarray(M @ w0, np.float64).reshape(-1) if is_sparse(M) else np.asarray(M, np.float64) @ w0
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(est) / np.abs(y)
        far = np.flatnonzero(reachable & (y != 0) & ((ratio > far_factor) | (ratio < 1.0 / far_factor)))
        if far.size:
            messages.append(
                f"{far.size} target(s) are more than {far_factor:g}x away from the estimate of the "
                f"initial weights: {listed(far)}. Check their units, or expect large weight changes."
            )
    neg = np.flatnonzero(y < 0)
    if neg.size and loss_type in (None, "relative"):
        messages.append(
            f"{neg.size} target(s) are negative: {listed(neg)}. loss_type='relative' divides by "
            f"(target + 1), which is not a relative error for them; use loss_type='relative_abs'."
        )
    if warn:
        for msg in messages:
            warnings.warn(msg, CalibrationWarning, stacklevel=2)
    return messages


def weight_summary(weights: ArrayLike, initial_weights: ArrayLike | None = None) -> dict[str, float]:
    """The distribution of calibrated weights.

    Args:
      weights: shape (n,), >= 0.
      initial_weights: shape (n,) or scalar, for the ratios ``w / w0`` of the active households.

    Returns:
      ``households``, ``active`` (weight > 0), ``active_share``, ``total`` (sum of weights),
      ``min``/``p01``/``p10``/``median``/``p90``/``p99``/``max``/``mean`` of the active weights,
      ``kish_ess`` (Kish's effective sample size ``(sum w)^2 / sum w^2``), ``design_effect``
      (``active / kish_ess``), and with initial weights ``ratio_min``/``ratio_median``/``ratio_max``.
    """
    w = np.asarray(weights, np.float64).reshape(-1)
    active = w[w > 0]
    out: dict[str, float] = {
        "households": int(w.size),
        "active": int(active.size),
        "active_share": float(active.size / max(w.size, 1)),
        "total": float(w.sum()),
    }
    if active.size:
        q = np.quantile(active, [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0])
        out.update(zip(("min", "p01", "p10", "median", "p90", "p99", "max"), map(float, q), strict=True))
        out["mean"] = float(active.mean())
        out["kish_ess"] = float(active.sum() ** 2 / np.sum(active**2))
        out["design_effect"] = float(active.size / out["kish_ess"])
        if initial_weights is not None:
            w0 = np.broadcast_to(np.asarray(initial_weights, np.float64), w.shape)[w > 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = active / w0
            r = r[np.isfinite(r)]
            if r.size:
                out.update(
                    ratio_min=float(r.min()), ratio_median=float(np.median(r)), ratio_max=float(r.max())
                )
    return out


def format_weight_summary(summary: dict[str, float]) -> str:
    """One paragraph of text for ``weight_summary``'s result."""
    s = summary
    text = (
        f"{s['active']:,} of {s['households']:,} households active ({s['active_share']:.2%}), "
        f"total weight {s['total']:,.6g}"
    )
    if s["active"]:
        text += (
            f"; active weights min {s['min']:.4g}, median {s['median']:.4g}, p99 {s['p99']:.4g}, max {s['max']:.4g}; "
            f"Kish effective sample size {s['kish_ess']:,.1f} (design effect {s['design_effect']:.2f})"
        )
        if "ratio_median" in s:
            text += (
                f"; w/w0 from {s['ratio_min']:.3g} to {s['ratio_max']:.3g} (median {s['ratio_median']:.3g})"
            )
    return text


# --------------------------------------------------------------------------------------------
# Per-epoch CSV log (microcalibrate's dashboard schema)
# --------------------------------------------------------------------------------------------

LOG_COLUMNS = ("epoch", "loss", "target_name", "target", "estimate", "error", "abs_error", "rel_abs_error")


class CsvLog:
    """A fit callback writing one CSV row per target at every chunk end (microcalibrate's schema).

    Columns ``epoch, loss, target_name, target, estimate, error, abs_error, rel_abs_error``:
    ``loss`` is the chunk's mean training loss, ``estimate`` uses the deterministic weights at that
    epoch (before the polish), ``rel_abs_error = abs_error / |target|`` (``abs_error`` for zero
    targets). Rows are flushed at each chunk, so a dashboard can follow a running fit. On a resumed
    run the rows after the checkpoint's epoch are dropped and the log continues.

    Example:
      >>> import pathlib, tempfile
      >>> import numpy as np, l0jax
      >>> M, y = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]), np.array([3.0, 4.0])
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
      >>> log = l0jax.CsvLog(path, ["persons", "households"])
      >>> res = l0jax.calibrate(M, y, key=0, epochs=200, log_every=100, callbacks=[log])
      >>> lines = path.read_text().splitlines()
      >>> lines[0]
      'epoch,loss,target_name,target,estimate,error,abs_error,rel_abs_error'
      >>> len(lines) - 1                  # 2 logged epochs x 2 targets
      4

    Args:
      path: the CSV file (overwritten at the start of a new run).
      target_names: one name per target (default ``target_0``, ...).
    """

    def __init__(self, path: str | os.PathLike, target_names: Sequence[str] | None = None):
        self.path = Path(path)
        self.target_names = None if target_names is None else [str(n) for n in target_names]

    def on_start(self, step: int) -> None:
        """Starts the file (header only at step 0; keeps the rows up to ``step`` when resuming)."""
        if jax.process_index() != 0:
            return
        kept: list[list[str]] = []
        if step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is not None and tuple(header) == LOG_COLUMNS:
                    kept = [row for row in reader if row and int(row[0]) <= step]
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOG_COLUMNS)
            w.writerows(kept)

    def __call__(self, info: Any) -> None:
        """Appends the rows of one chunk end (``info`` is the fit's ``ChunkInfo``).

        In a multi-process run every process computes the predictions (a collective) and the first
        one writes the file.
        """
        est = np.asarray(info.predictions(), np.float64)
        if jax.process_index() != 0:
            return
        y = np.asarray(info.targets, np.float64)
        names = self.target_names or [f"target_{i}" for i in range(y.size)]
        if len(names) != y.size:
            raise ValueError(f"CsvLog has {len(names)} target names but the fit has {y.size} targets.")
        err = est - y
        rel = np.abs(relative_error(est, y))
        loss = repr(float(info.row["loss"]))
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for i in range(y.size):
                w.writerow(
                    [
                        info.epoch,
                        loss,
                        names[i],
                        repr(float(y[i])),
                        repr(float(est[i])),
                        repr(float(err[i])),
                        repr(float(abs(err[i]))),
                        repr(float(rel[i])),
                    ]
                )
