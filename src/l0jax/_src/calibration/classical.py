"""Exact classical calibration (Deville & Saerndal 1992) by Newton's method on the Lagrange multipliers.

Calibration chooses weights ``w`` close to the design weights ``d`` under the constraints
``M @ w = t`` (M: targets x households, t: the population totals). With the distance
``sum_j d_j G(w_j / d_j)`` the solution is

    w_j = d_j F(x_j' lam),      F = (G')^{-1},                                   (DS eq. 2.4)

where ``x_j`` is household j's column of M and ``lam`` (one multiplier per target) solves the
calibration equations ``phi(lam) = sum_j d_j F(x_j' lam) x_j - t = 0``. ``phi`` is the gradient of
the convex dual function

    h(lam) = sum_j d_j Phi(x_j' lam) - lam' t,      Phi' = F,

whose Hessian is ``M diag(d F'(M' lam)) M'``; Newton's method on ``h`` (the full step taken when it
lowers ``h`` or the residual, else a backtracking Armijo line search on ``h``) converges from
``lam = 0`` whenever the totals are reachable, in a handful of iterations (one for unbounded linear
calibration). The functions ``F`` (the g-weights
as a function of ``u = x' lam``) of the three methods of R's ``survey::calibrate``:

* ``"linear"`` (chi-square distance, GREG): ``F(u) = 1 + u``; with bounds ``(L, U)`` on ``w/d`` it
  is truncated, ``clip(1 + u, L, U)`` (R's truncated linear method);
* ``"raking"`` (Kullback-Leibler distance, raking ratio): ``F(u) = exp(u)``, truncated to
  ``[L, U]`` when bounds are given;
* ``"logit"`` (DS's bounded logit distance): ``F(u) = L + (U - L) sigmoid(A u + c)`` with
  ``A = (U - L) / ((1 - L)(U - 1))`` and ``c = log((1 - L) / (U - 1))``, so ``F(0) = 1``,
  ``F'(0) = 1`` and every ratio lies strictly inside ``(L, U)``; bounds are required.

The Hessian is singular when targets are linearly dependent (two categorical margins both sum to
the population size); the Newton system is then solved by a pseudo-inverse (the totals must then
agree, else they conflict, see ``feasibility.py``). The loop is one compiled ``lax.while_loop``; the
matrix, totals, weights, bounds, tolerance and iteration cap are all arguments, so new totals or
bounds never recompile, and ``vmap`` over the design weights recalibrates replicate weights in
one run (``variance.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks
from l0jax._src.calibration import feasibility
from l0jax._src.calibration.blocks import CalibrationMatrix
from l0jax._src.calibration.diagnostics import CalibrationWarning
from l0jax._src.calibration.gram import DenseGram, GramLayout, PaddedGram, gram_matrix

if TYPE_CHECKING:  # variance imports this module
    from l0jax._src.calibration.variance import ReplicateCalibration, ReplicateWeights, SurveyEstimate

Array = jax.Array
CalibrationMethod = Literal["linear", "raking", "logit"]
"""The calibration distance of classical calibration (Deville and Saerndal 1992)."""
METHODS: tuple[CalibrationMethod, ...] = get_args(CalibrationMethod)
# Armijo constant of the line search, and the most step halvings before the step counts as failed.
_ARMIJO = 1e-4
_HALVINGS = 60


# --------------------------------------------------------------------------------------------
# The calibration functions F, their slopes and integrals (one per method)
# --------------------------------------------------------------------------------------------


def _logit_constants(lower: Array, upper: Array) -> tuple[Array, Array]:
    """``A = (U - L) / ((1 - L)(U - 1))`` and ``c = log((1 - L) / (U - 1))`` of the logit method."""
    a = (upper - lower) / ((1 - lower) * (upper - 1))
    c = jnp.log(1 - lower) - jnp.log(upper - 1)
    return a, c


def g_weight(method: CalibrationMethod, u: Array, lower: Array, upper: Array) -> Array:
    """``F(u)``: the ratio ``w/d`` of a household with ``u = x' lam`` (DS eq. 2.4).

    Args:
      method: ``"linear"``, ``"raking"`` or ``"logit"``.
      u: ``M.T @ lam``, shape (n,).
      lower: the lower bound L of ``w/d`` (``-inf`` for unbounded linear, 0 for unbounded raking).
      upper: the upper bound U (``inf`` when unbounded).

    Returns:
      The g-weights, shape (n,).
    """
    if method == "linear":
        return jnp.clip(1 + u, lower, upper)
    if method == "raking":
        return jnp.exp(jnp.clip(u, jnp.log(lower), jnp.log(upper)))
    a, c = _logit_constants(lower, upper)
    return lower + (upper - lower) * jax.nn.sigmoid(a * u + c)


def g_weight_slope(method: CalibrationMethod, u: Array, lower: Array, upper: Array) -> Array:
    """``F'(u)``: 0 where a truncated method sits at a bound."""
    if method == "linear":
        return ((u > lower - 1) & (u < upper - 1)).astype(u.dtype)
    if method == "raking":
        inside = (u > jnp.log(lower)) & (u < jnp.log(upper))
        return jnp.where(inside, jnp.exp(jnp.clip(u, jnp.log(lower), jnp.log(upper))), 0)
    a, c = _logit_constants(lower, upper)
    s = jax.nn.sigmoid(a * u + c)
    return (upper - lower) * a * s * (1 - s)


def g_weight_integral(method: CalibrationMethod, u: Array, lower: Array, upper: Array) -> Array:
    """``Phi(u)``, a primitive of ``F`` (up to a constant): the dual function's per-household term.

    For the truncated methods, with ``c = clip(u, F^{-1}(L), F^{-1}(U))``, it is the primitive of the
    untruncated F at ``c`` continued linearly with slope ``F(u)`` beyond it.
    """
    if method == "linear":
        c = jnp.clip(u, lower - 1, upper - 1)
        return c + 0.5 * c * c + (1 + c) * (u - c)
    if method == "raking":
        c = jnp.clip(u, jnp.log(lower), jnp.log(upper))
        e = jnp.exp(c)
        return e - 1 + e * (u - c)
    a, c = _logit_constants(lower, upper)
    return lower * u + (upper - lower) / a * (jax.nn.softplus(a * u + c) - jax.nn.softplus(c))


# --------------------------------------------------------------------------------------------
# Newton's method
# --------------------------------------------------------------------------------------------


def solve_psd(H: Array, b: Array) -> Array:
    """A solution of ``H x = b`` for a symmetric positive semi-definite H, by a scaled pseudo-inverse.

    H is scaled to a unit diagonal (rows of very different magnitudes: counts and money totals),
    then eigenvalues below ``100 * m * eps`` of the largest are dropped: the null directions of
    linearly dependent targets. For ``b`` in the range of H (consistent totals) this is an exact
    solution.

    Args:
      H: shape (m, m).
      b: shape (m,).

    Returns:
      shape (m,).
    """
    diag = jnp.diagonal(H)
    s = jnp.where(diag > 0, jax.lax.rsqrt(jnp.where(diag > 0, diag, 1)), 0)
    evals, vecs = jnp.linalg.eigh(H * s[:, None] * s[None, :])
    rcond = 100 * H.shape[0] * jnp.finfo(H.dtype).eps
    keep = evals > rcond * jnp.max(evals)
    inv = jnp.where(keep, 1 / jnp.where(keep, evals, 1), 0)
    return s * (vecs @ (inv * (vecs.T @ (s * b))))


class NewtonState(NamedTuple):
    """The loop's carry: multipliers, ``u = M' lam``, residual ``M w - t``, counters and flags."""

    lam: Array
    u: Array
    residual: Array
    iterations: Array
    converged: Array
    stalled: Array


def _converged(residual: Array, scale: Array, tol: Array) -> Array:
    return jnp.max(jnp.abs(residual) / scale) <= tol


def solve_impl(
    method: CalibrationMethod,
    gram: DenseGram | PaddedGram,
    targets: Array,
    design: Array,
    lower: Array,
    upper: Array,
    scale: Array,
    tol: Array,
    max_iter: Array,
) -> tuple[NewtonState, Array]:
    """Newton's method on the dual ``h(lam)`` with a line search (module docstring); pure, jit- and vmap-safe.

    Args:
      method: ``"linear"``, ``"raking"`` or ``"logit"`` (static).
      gram: the matrix M (m, n) (``gram.gram_matrix``).
      targets: the totals t, shape (m,).
      design: the design weights d, shape (n,).
      lower: lower bound of ``w/d``, scalar.
      upper: upper bound of ``w/d``, scalar.
      scale: per-target scale of the residual in the convergence test, shape (m,), > 0.
      tol: the loop stops when every ``|M w - t| / scale <= tol``.
      max_iter: most Newton steps.

    Returns:
      ``(state, g)``: the final ``NewtonState`` and the g-weights of its end point,
      ``g_weight(method, state.u, lower, upper)``, shape (n,) (the weights are ``design * g``).
    """

    def residual_at(u):
        return gram.matvec(design * g_weight(method, u, lower, upper)) - targets

    def dual(lam, u):
        # h(lam), and the sum of the magnitudes of its terms (the scale of its rounding error).
        terms = design * g_weight_integral(method, u, lower, upper)
        return jnp.sum(terms) - lam @ targets, jnp.sum(jnp.abs(terms)) + jnp.abs(lam) @ jnp.abs(targets)

    def cond(st):
        return (~st.converged) & (~st.stalled) & (st.iterations < max_iter)

    def merit(residual):
        return jnp.sum(jnp.square(residual / scale))

    def body(st):
        hess = gram.gram(design * g_weight_slope(method, st.u, lower, upper))
        step = -solve_psd(hess, st.residual)
        du = gram.rmatvec(step)
        slope = st.residual @ step  # <= 0: a descent direction of h
        h0, size = dual(st.lam, st.u)
        slack = 64 * jnp.finfo(h0.dtype).eps * size

        def armijo(alpha):
            h, _ = dual(st.lam + alpha * step, st.u + alpha * du)
            return jnp.isfinite(h) & (h <= h0 + _ARMIJO * alpha * slope + slack)

        # The full step is taken when it lowers h or the residual: near the solution the decrease
        # of h drowns in the rounding of its sum over n households, while the residual (needed for
        # the convergence test anyway) still measures Newton's quadratic progress.
        r_full = residual_at(st.u + du)
        full = (merit(r_full) < merit(st.residual)) | armijo(jnp.ones((), h0.dtype))
        alpha, k = jax.lax.while_loop(
            lambda c: ~full & ~armijo(c[0]) & (c[1] < _HALVINGS),
            lambda c: (c[0] * 0.5, c[1] + 1),
            (jnp.full((), 0.5, h0.dtype), jnp.zeros((), jnp.int32)),
        )
        alpha = jnp.where(full, 1, alpha)
        failed = (~full & (k >= _HALVINGS)) | ~jnp.isfinite(slope)
        lam = jnp.where(failed, st.lam, st.lam + alpha * step)
        u = jnp.where(failed, st.u, st.u + alpha * du)
        residual = jax.lax.cond(full, lambda: r_full, lambda: residual_at(u))
        residual = jnp.where(failed, st.residual, residual)
        return NewtonState(
            lam,
            u,
            residual,
            st.iterations + (~failed).astype(jnp.int32),
            _converged(residual, scale, tol),
            failed,
        )

    m = targets.shape[0]
    u0 = jnp.zeros_like(design)
    r0 = residual_at(u0)
    init = NewtonState(
        jnp.zeros((m,), design.dtype),
        u0,
        r0,
        jnp.zeros((), jnp.int32),
        _converged(r0, scale, tol),
        jnp.zeros((), bool),
    )
    state = jax.lax.while_loop(cond, body, init)
    return state, g_weight(method, state.u, lower, upper)


solve = jax.jit(solve_impl, static_argnums=0)


# --------------------------------------------------------------------------------------------
# Host API
# --------------------------------------------------------------------------------------------


def resolve_bounds(method: CalibrationMethod, bounds: Any) -> tuple[float, float]:
    """Checks ``bounds`` on ``w/d`` and returns ``(L, U)`` with the method's defaults.

    Raises:
      ValueError: logit without bounds, bounds that do not bracket 1 (strictly for logit), a
        negative lower bound for raking, or a malformed pair.
    """
    checks.check_choice("method", method, METHODS)
    if bounds is None:
        if method == "logit":
            raise ValueError(
                "method='logit' needs bounds=(L, U) on the ratio w/d, with 0 <= L < 1 < U, "
                "e.g. bounds=(0.5, 2.0)."
            )
        return (-np.inf, np.inf) if method == "linear" else (0.0, np.inf)
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (L, U) of numbers bounding w/d, got {bounds!r}.") from None
    if np.isnan(lo) or np.isnan(hi) or not lo < hi:
        raise ValueError(f"bounds=(L, U) needs L < U, got {bounds!r}.")
    if method == "logit":
        if not (0 <= lo < 1 < hi < np.inf):
            raise ValueError(
                f"method='logit' needs bounds with 0 <= L < 1 < U < inf (the ratio w/d = 1 must be "
                f"strictly inside), got {bounds!r}."
            )
    elif not lo <= 1 <= hi:
        raise ValueError(f"bounds=(L, U) must contain 1 (w = d, no adjustment), got {bounds!r}.")
    if method == "raking" and lo < 0:
        raise ValueError(f"method='raking' keeps w/d > 0; its lower bound must be >= 0, got {lo!r}.")
    return lo, hi


def check_design_weights(design_weights: ArrayLike, n: int) -> np.ndarray:
    """``design_weights`` as float64 of shape (n,): finite, >= 0, not all zero."""
    d = checks.real_array("design_weights", design_weights)
    if d.ndim == 0:
        d = np.full(n, float(d))
    if d.shape != (n,):
        raise ValueError(
            f"design_weights must have shape ({n},), one per household (column of M), got {d.shape}."
        )
    checks.check_nonnegative(
        "design_weights", d, hint="They are the design (inverse inclusion probability) weights."
    )
    if not np.any(d > 0):
        raise ValueError("design_weights are all zero; at least one household needs a positive weight.")
    return d


def check_targets(targets: Any, m: int, n: int) -> np.ndarray:
    """``targets`` as float64 of shape (m,), finite; a transposed M is named in the error."""
    t = checks.real_array("targets", targets)
    if t.ndim == 2 and 1 in t.shape:
        t = t.reshape(-1)
    if t.shape != (m,):
        hint = (
            " M looks transposed: it must be targets x households, as in l0jax.calibrate; pass M.T."
            if t.shape == (n,)
            else ""
        )
        raise ValueError(f"targets must have shape ({m},), one per row of M, got {t.shape}.{hint}")
    checks.check_finite("targets", t)
    return t


def residual_scale(gram: DenseGram | PaddedGram, design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-target scale of the convergence test: ``max(|t_i|, sum_j d_j |M_ij|)``, 1 for an empty zero row."""
    size = np.asarray(_abs_matvec(gram, jnp.asarray(design, dtype_of(gram))), np.float64)
    scale = np.maximum(np.abs(targets), size)
    return np.where(scale > 0, scale, 1.0)


@jax.jit
def _abs_matvec(gram, w):
    if isinstance(gram, DenseGram):
        return jnp.abs(gram.data) @ w
    return PaddedGram(gram.idx, jnp.abs(gram.val), gram.m).matvec(w)


def dtype_of(gram: DenseGram | PaddedGram) -> Any:
    return (gram.data if isinstance(gram, DenseGram) else gram.val).dtype


def precision_of(gram: DenseGram | PaddedGram) -> Any:
    """A context computing in the gram's precision: 64-bit JAX for a float64 calibration (made under
    ``jax.enable_x64``), so its standard errors and replicates keep float64 wherever they are asked for.
    """
    return jax.enable_x64(True) if dtype_of(gram) == np.float64 else contextlib.nullcontext()


def default_tol(dtype: DTypeLike) -> float:
    """1e-10 in float64, 1e-5 in float32 (where 1e-10 is below rounding)."""
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


@dataclasses.dataclass(frozen=True)
class ClassicalCalibration:
    """The result of ``calibrate_classical``: calibrated weights and how Newton's method got there.

    Attributes:
      weights: the calibrated weights ``w = d * g``, shape (n,), float64 (float32 without 64-bit JAX).
      g_weights: the ratios ``w / d`` (``F(x' lam)``), shape (n,).
      multipliers: the Lagrange multipliers ``lam``, one per target, shape (m,).
      iterations: Newton steps taken.
      converged: whether every ``|M w - t|`` fell to ``tol`` times its scale
        (``max(|t_i|, sum_j d_j |M_ij|)``).
      residuals: ``M @ w - targets``, shape (m,).
      method: ``"linear"``, ``"raking"`` or ``"logit"``.
      bounds: ``(L, U)`` on ``w/d`` as used (the method's defaults when none were given).
      design_weights: d, shape (n,).
      targets: t, shape (m,).
    """

    weights: np.ndarray
    g_weights: np.ndarray
    multipliers: np.ndarray
    iterations: int
    converged: bool
    residuals: np.ndarray
    method: str
    bounds: tuple[float, float]
    design_weights: np.ndarray
    targets: np.ndarray
    gram: DenseGram | PaddedGram = dataclasses.field(repr=False)
    tol: float = dataclasses.field(repr=False, default=1e-10)
    max_iter: int = dataclasses.field(repr=False, default=50)

    def total(
        self,
        y: ArrayLike,
        *,
        strata: ArrayLike | None = None,
        clusters: ArrayLike | None = None,
        fpc: ArrayLike | None = None,
    ) -> SurveyEstimate:
        """The calibrated total ``sum_j w_j y_j`` with its linearised (GREG residual) standard error.

        See ``l0jax.calibrated_total``.
        """
        from l0jax._src.calibration import variance

        return variance.calibrated_total(self, y, strata=strata, clusters=clusters, fpc=fpc)

    def mean(
        self,
        y: ArrayLike,
        *,
        strata: ArrayLike | None = None,
        clusters: ArrayLike | None = None,
        fpc: ArrayLike | None = None,
    ) -> SurveyEstimate:
        """The calibrated mean ``sum_j w_j y_j / sum_j w_j`` with its linearised standard error.

        See ``l0jax.calibrated_mean``.
        """
        from l0jax._src.calibration import variance

        return variance.calibrated_mean(self, y, strata=strata, clusters=clusters, fpc=fpc)

    def replicate(self, replicate_weights: ReplicateWeights) -> ReplicateCalibration:
        """Recalibrates each replicate of ``replicate_weights`` (``l0jax.replicate_weights``) in one run.

        See ``l0jax.recalibrate_replicates``.
        """
        from l0jax._src.calibration import variance

        return variance.recalibrate_replicates(self, replicate_weights)

    def summary(self) -> str:
        """One line: method, convergence, iterations, largest relative residual, range of w/d."""
        t = np.abs(self.targets)
        rel = np.max(np.abs(self.residuals) / np.where(t > 0, t, 1.0))
        positive = self.design_weights > 0
        g = self.g_weights[positive]
        state = "converged" if self.converged else "NOT converged"
        return (
            f"{self.method} calibration {state} in {self.iterations} Newton step(s); largest relative "
            f"residual {rel:.2e}; w/d in [{g.min():.4g}, {g.max():.4g}]"
        )

    def __repr__(self) -> str:
        return f"ClassicalCalibration({self.summary()})"


def calibrate_classical(
    M: CalibrationMatrix,
    targets: ArrayLike,
    design_weights: ArrayLike,
    *,
    method: CalibrationMethod = "linear",
    bounds: tuple[float, float] | None = None,
    max_iter: int = 50,
    tol: float | None = None,
    target_names: Sequence[str] | None = None,
    layout: GramLayout = "auto",
) -> ClassicalCalibration:
    """Calibrates design weights to known totals exactly: R's ``survey::calibrate``, by Newton's method.

    Finds ``w = d * F(M' lam)`` with ``M @ w = targets`` (Deville & Saerndal 1992), where ``F`` is
    the method's calibration function (see ``l0jax._src.calibration.classical``): linear (GREG),
    raking, or bounded logit. Newton's method on the multipliers ``lam`` with a line search, in one
    compiled loop; 64-bit when JAX runs in 64-bit mode (``with jax.enable_x64():``).

    Example:
      >>> import numpy as np, l0jax
      >>> M = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])   # population size, women
      >>> res = l0jax.calibrate_classical(M, [100.0, 60.0], [20.0, 20.0, 20.0, 20.0], method="raking")
      >>> np.round(res.weights, 3).tolist(), res.converged
      ([30.0, 20.0, 30.0, 20.0], True)

    Args:
      M: the calibration matrix, shape (m targets, n households), the orientation of
        ``l0jax.calibrate``: row i holds each household's contribution to total i (an indicator
        for a count, a value for a sum). scipy sparse (any format), NumPy or JAX.
      targets: the population totals, shape (m,).
      design_weights: the design weights d, shape (n,) (or a scalar), >= 0; households with d = 0
        keep w = 0.
      method: ``"linear"`` (GREG; weights may turn negative unless bounded), ``"raking"``
        (w/d > 0) or ``"logit"`` (L < w/d < U).
      bounds: ``(L, U)`` on ``w/d``: required for ``"logit"`` (``0 <= L < 1 < U``); for
        ``"linear"`` and ``"raking"`` it truncates F to ``[L, U]`` (``L <= 1 <= U``).
      max_iter: most Newton steps, >= 1.
      tol: convergence when every ``|M w - t|_i <= tol * max(|t_i|, sum_j d_j |M_ij|)``; None
        means 1e-10 in float64 and 1e-5 in float32.
      target_names: names of the targets, used in error messages.
      layout: how M is stored for the Newton system: ``"auto"``, ``"dense"`` or ``"padded"``
        (per-household nonzeros; for large sparse M), see ``l0jax._src.calibration.gram``.

    Returns:
      A ``ClassicalCalibration`` (weights, g-weights, multipliers, iterations, converged flag,
      residuals), whose ``total``, ``mean`` and ``replicate`` give estimates with standard errors.

    Raises:
      ValueError: bad input (shapes, NaN, negative design weights, bounds), or totals that no
        weights within the bounds can meet: the message names the conflicting targets when it can
        tell (a target beyond what its row allows, linearly dependent targets whose totals
        disagree, or a set of targets an LP finds jointly unreachable).
    """
    lower, upper = resolve_bounds(method, bounds)
    max_iter = checks.check_int_at_least("max_iter", max_iter, 1)
    if tol is not None:
        checks.check_positive(
            "tol", tol, hint="It is the relative residual at which Newton's method stops, e.g. 1e-10."
        )
    gram = gram_matrix(M, layout=layout)
    m, n = gram.shape
    t = check_targets(targets, m, n)
    d = check_design_weights(design_weights, n)
    if target_names is not None and len(target_names) != m:
        raise ValueError(f"target_names must have one name per target ({m}), got {len(target_names)}.")
    dt = dtype_of(gram)
    tol = default_tol(dt) if tol is None else float(tol)
    scale = residual_scale(gram, d, t)
    state, g = jax.device_get(
        solve(
            method,
            gram,
            *(jnp.asarray(a, dt) for a in (t, d, lower, upper, scale, tol)),
            jnp.asarray(max_iter, jnp.int32),
        )
    )
    g = np.asarray(g)
    weights = d.astype(g.dtype) * g
    converged = bool(state.converged)
    if not converged:
        report = feasibility.diagnose(M, t, d, lower, upper, method=method, names=target_names, tol=tol)
        if report is not None:
            raise ValueError(report)
        worst = int(np.argmax(np.abs(state.residual) / scale))
        label = feasibility.target_label(worst, target_names)
        why = (
            "the line search could not decrease the dual any more"
            if bool(state.stalled)
            else f"max_iter={max_iter} steps were not enough"
        )
        warnings.warn(
            f"{method} calibration did not converge ({why}): target {label} is still off by "
            f"{abs(state.residual[worst]) / scale[worst]:.2e} of its scale. No infeasibility was found; the "
            f"totals may be reachable only with ratios w/d at the bounds. Widen the bounds or raise max_iter "
            f"(converged=False on the result).",
            CalibrationWarning,
            stacklevel=2,
        )
    return ClassicalCalibration(
        weights=weights,
        g_weights=g,
        multipliers=np.asarray(state.lam),
        iterations=int(state.iterations),
        converged=converged,
        residuals=np.asarray(state.residual),
        method=method,
        bounds=(lower, upper),
        design_weights=d,
        targets=t,
        gram=gram,
        tol=tol,
        max_iter=max_iter,
    )
