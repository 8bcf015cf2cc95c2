"""Why calibration totals cannot be met: which targets conflict, said in the error message.

When Newton's method does not converge, ``diagnose`` looks for a proof that no weights with
``w/d`` within the bounds meet the totals, from the cheapest to the most thorough:

1. a single target beyond its row's reach: ``sum_j min(M_ij lo_j, M_ij hi_j) <= t_i <=
   sum_j max(M_ij lo_j, M_ij hi_j)`` fails, with ``[lo_j, hi_j] = [L d_j, U d_j]`` (e.g. a cell
   whose total needs every ratio above U);
2. linearly dependent targets whose totals disagree: a vector ``v`` with ``v' M = 0`` (every
   household satisfies the same linear identity, such as two margins that both count every
   household) but ``v' t != 0``;
3. targets jointly unreachable within the bounds: the phase-1 linear program
   ``min sum |s|  s.t.  M w + s = t,  lo <= w <= hi`` (rows scaled to unit size) has a positive
   optimum; its dual solution is a certificate whose support is the set of conflicting targets.

Each test is exact up to rounding (``tol`` relative to each target's scale). Raking and logit
need ratios strictly inside the bounds, so totals reachable only on a bound pass these tests
and Newton's method reports non-convergence instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from l0jax._src.operators import is_sparse

if TYPE_CHECKING:  # classical imports this module
    from l0jax._src.calibration.classical import CalibrationMethod

# The LP of test 3 runs only below this many stored entries (HiGHS takes seconds there).
_LP_MAX_NONZEROS = 2_000_000
# Null vectors of M M' (test 2): eigenvalues below this fraction of the largest (unit diagonal).
_NULL_RCOND = 1e-10
# Marginal (dual) values below this count as zero (test 3's certificate).
_DUAL_ZERO = 1e-9
_MAX_LISTED = 8


def target_label(i: int, names: Sequence[str] | None) -> str:
    """``"3 ('stype=E')"``, or ``"3"`` without names."""
    return f"{i} ({names[i]!r})" if names is not None else f"{i}"


def _list(indices: Sequence[int] | np.ndarray, names: Sequence[str] | None) -> str:
    shown = ", ".join(target_label(int(i), names) for i in list(indices)[:_MAX_LISTED])
    more = len(indices) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _box(d: np.ndarray, lower: float, upper: float) -> tuple[np.ndarray, np.ndarray]:
    """``[L d, U d]`` per household, with 0 (not nan) where d = 0."""
    with np.errstate(invalid="ignore"):
        lo = np.where(d > 0, lower * d, 0.0)
        hi = np.where(d > 0, upper * d, 0.0)
    return lo, hi


def row_ranges(csr: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest value of each row's total over the box ``lo <= w <= hi``."""
    pos = csr.copy()
    pos.data = np.maximum(pos.data, 0)
    neg = csr.copy()
    neg.data = np.minimum(neg.data, 0)
    with np.errstate(invalid="ignore"):
        # inf * 0 never occurs: stored zeros were removed, and hi/lo are 0 where d = 0.
        least = pos @ lo + neg @ hi
        most = pos @ hi + neg @ lo
    return least, most


def _single_targets(csr, t, lo, hi, slack, names, bounds_text) -> str | None:
    least, most = row_ranges(csr, lo, hi)
    high = np.flatnonzero(t > most + slack)
    low = np.flatnonzero(t < least - slack)
    if not high.size and not low.size:
        return None
    parts = [
        f"target {target_label(i, names)} = {t[i]:.6g} is above the most its row allows, {most[i]:.6g}"
        for i in high[:_MAX_LISTED]
    ]
    parts += [
        f"target {target_label(i, names)} = {t[i]:.6g} is below the least its row allows, {least[i]:.6g}"
        for i in low[:_MAX_LISTED]
    ]
    more = high.size + low.size - len(parts)
    return (
        f"the totals cannot be met with {bounds_text}: "
        + "; ".join(parts)
        + (f"; and {more} more" if more > 0 else "")
        + ". Widen the bounds, or check these totals against the sample."
    )


def _dependent_targets(csr, t, scale, tol, names) -> str | None:
    m = csr.shape[0]
    gram = (csr @ csr.T).toarray()
    diag = np.diag(gram)
    s = np.where(diag > 0, 1 / np.sqrt(np.where(diag > 0, diag, 1)), 0.0)
    evals, vecs = np.linalg.eigh(gram * s[:, None] * s[None, :])
    null = vecs[:, evals <= _NULL_RCOND * max(evals.max(), 0.0)] * s[:, None]
    empty = diag == 0  # an empty row: its own null vector (handled by the row-range test with bounds)
    null = np.hstack([null, np.eye(m)[:, empty]]) if empty.any() else null
    for v in null.T:
        v = v / np.abs(v).max()
        v = v if v[np.flatnonzero(np.abs(v) > 1e-8)[0]] > 0 else -v  # first coefficient positive
        # Rows scaled to unit size: the mismatch is judged relative to the totals involved.
        mismatch = float(v @ t)
        if abs(mismatch) > tol * max(float(np.abs(v) @ scale), 1e-300):
            involved = np.flatnonzero(np.abs(v) > 1e-8)
            terms = " ".join(
                f"{'+' if v[i] > 0 else '-'} {abs(v[i]):.4g} * [{target_label(int(i), names)}]"
                for i in involved[:_MAX_LISTED]
            )
            return (
                f"the totals conflict: targets {_list(involved, names)} are linearly dependent (every "
                f"household satisfies {terms[2:]} = 0) but their totals give {mismatch:.6g} "
                f"instead of 0. Make these totals consistent (e.g. two margins must share the population "
                f"size), or drop one of the targets."
            )
    return None


def _joint_targets(csr, t, scale, lo, hi, tol, names, bounds_text) -> str | None:
    from scipy.optimize import linprog

    m, n = csr.shape
    rows = sp.diags(1 / scale) @ csr
    a_eq = sp.hstack([rows, sp.identity(m), -sp.identity(m)], format="csr")
    cost = np.concatenate([np.zeros(n), np.ones(2 * m)])
    box = [
        (None if not np.isfinite(a) else a, None if not np.isfinite(b) else b)
        for a, b in zip(lo, hi, strict=True)
    ]
    res = linprog(cost, A_eq=a_eq, b_eq=t / scale, bounds=box + [(0, None)] * (2 * m), method="highs")
    if res.status != 0 or res.fun <= max(tol, 1e-9) * m:
        return None
    duals = np.asarray(res.eqlin.marginals)
    involved = np.flatnonzero(np.abs(duals) > _DUAL_ZERO)
    x = res.x
    assert x is not None  # HiGHS returns a point with status 0
    gap = (x[n : n + m] - x[n + m :]) * scale
    worst = involved[np.argsort(-np.abs(gap[involved]))] if involved.size else np.argsort(-np.abs(gap))[:1]
    closest = "; ".join(
        f"{target_label(int(i), names)}: target {t[i]:.6g}, closest reachable {t[i] - gap[i]:.6g}"
        for i in worst[:_MAX_LISTED]
        if gap[i] != 0
    )
    return (
        f"the totals cannot be met jointly with {bounds_text}: targets {_list(involved, names)} conflict "
        f"(each can be met alone, not all together); the closest reachable totals - {closest}. Widen the "
        f"bounds or revise these totals."
    )


def diagnose(
    M: Any,
    targets: np.ndarray,
    design: np.ndarray,
    lower: float,
    upper: float,
    *,
    method: CalibrationMethod,
    names: Sequence[str] | None,
    tol: float,
) -> str | None:
    """An error message naming the targets that make the calibration infeasible, or None if none is found.

    Args:
      M: the matrix (m, n) as given to ``calibrate_classical``.
      targets: shape (m,).
      design: the design weights, shape (n,).
      lower: lower bound of ``w/d`` (``-inf`` when unbounded).
      upper: upper bound of ``w/d`` (``inf`` when unbounded).
      method: the calibration method (for the message).
      names: target names, or None.
      tol: relative tolerance of the tests.

    Returns:
      The message, or None when the totals look reachable (non-convergence has another cause).
    """
    csr = sp.csr_matrix(M if is_sparse(M) else np.asarray(M), dtype=np.float64)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    t = np.asarray(targets, np.float64)
    lo, hi = _box(np.asarray(design, np.float64), lower, upper)
    size = abs(csr) @ np.abs(np.where(np.isfinite(hi), np.maximum(np.abs(lo), np.abs(hi)), design))
    scale = np.maximum(np.maximum(np.abs(t), size), 1e-300)
    slack = max(tol, 1e-9) * scale
    bounds_text = (
        f"w/d in [{lower:g}, {upper:g}] ({method})"
        if np.isfinite(lower) or np.isfinite(upper)
        else f"unbounded {method} weights"
    )
    report = _single_targets(csr, t, lo, hi, slack, names, bounds_text)
    if report is None and csr.shape[0] <= 20_000:
        report = _dependent_targets(csr, t, scale, max(tol, 1e-9), names)
    if report is None and csr.nnz <= _LP_MAX_NONZEROS and (np.isfinite(lo).any() or np.isfinite(hi).any()):
        report = _joint_targets(csr, t, scale, lo, hi, max(tol, 1e-9), names, bounds_text)
    return report
