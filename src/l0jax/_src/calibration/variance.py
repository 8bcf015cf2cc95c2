"""Standard errors of calibrated estimates: linearisation (GREG residuals) and recalibrated replicates.

**Linearisation.** A calibrated total ``sum_j w_j y_j`` behaves, to first order, like the total of
the residuals of ``y`` regressed on the calibration variables (Deville & Saerndal 1992, section 3):
its variance is the design variance of the scores

    e_j = w_j (y_j - x_j' B),      B = (sum_j d_j x_j x_j')^+ sum_j d_j x_j y_j,

the regression weighted by the design weights d and the residuals carried by the calibrated
weights w (R's ``survey`` package computes exactly this for ``calibrate``d designs, whatever the
calibration function). A mean ``sum w y / sum w`` is the total of ``z = (y - mean) / sum(w)``.
Whatever is calibrated on has no variance left: the scores of a calibration variable are zero.

The design variance of a total of scores, for a stratified sample of primary sampling units
(clusters, or the households themselves) drawn with replacement, or without replacement with a
finite population correction, is the ultimate-cluster estimator

    v = sum_h (1 - f_h) n_h / (n_h - 1) sum_{c in h} (e_hc - mean_h e)^2,

with ``e_hc`` the cluster totals of the scores, ``n_h`` the clusters sampled in stratum h and
``f_h`` the sampling fraction (0 without fpc): R's ``svyrecvar`` for a one-stage design.

**Replicates.** ``replicate_weights`` builds jackknife (JK1: drop one cluster at a time; JKn: the
same within each stratum) or Rao-Wu rescaling bootstrap replicates of the design weights;
``recalibrate_replicates`` recalibrates every replicate to the same totals, all of them in one
compiled, vmapped run of Newton's method, and the replicate estimates give the variance
``scale * sum_r rscale_r (theta_r - mean theta)^2`` (R's ``as.svrepdesign`` + ``svytotal``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src.calibration import classical
from l0jax._src.calibration.diagnostics import CalibrationWarning
from l0jax._src.calibration.gram import DenseGram, PaddedGram

Array = jax.Array
ReplicateMethod = Literal["JK1", "JKn", "bootstrap"]
"""The replicate-weight variance method."""
REPLICATE_METHODS: tuple[ReplicateMethod, ...] = get_args(ReplicateMethod)


# --------------------------------------------------------------------------------------------
# Design variance of a total of scores
# --------------------------------------------------------------------------------------------


def _labels(name: str, values: Any, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one label per household, got {arr.shape}.")
    if arr.dtype.kind == "f":
        checks.check_finite(name, arr)
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


def _sampling_fractions(
    fpc: ArrayLike | None, stratum: np.ndarray, psu_per_stratum: np.ndarray, n: int
) -> np.ndarray:
    """``f_h`` per stratum from ``fpc``: population counts of PSUs (> 1) or sampling fractions (<= 1)."""
    k = psu_per_stratum.size
    if fpc is None:
        return np.zeros(k)
    arr = np.asarray(fpc, np.float64)
    arr = np.full(n, float(arr)) if arr.ndim == 0 else arr
    if arr.shape != (n,):
        raise ValueError(
            f"fpc must be a number or have shape ({n},), one value per household, got {arr.shape}."
        )
    checks.check_nonnegative(
        "fpc",
        arr,
        hint="It is the population number of PSUs in the stratum, or the sampling fraction (<= 1).",
    )
    per = np.zeros(k)
    per[stratum] = arr
    if not np.allclose(arr, per[stratum], rtol=0, atol=0):
        raise ValueError(
            "fpc must be constant within each stratum (the stratum's population count of PSUs, or "
            "its sampling fraction)."
        )
    frac = np.where(per <= 1, per, psu_per_stratum / np.where(per > 0, per, 1))
    if np.any(frac > 1 + 1e-12):
        h = int(np.argmax(frac))
        raise ValueError(
            f"fpc gives stratum {h} a population of {per[h]:g} PSUs, fewer than the "
            f"{psu_per_stratum[h]} sampled there."
        )
    return np.minimum(frac, 1.0)


@dataclasses.dataclass(frozen=True)
class SampleDesign:
    """The strata, PSUs and sampling fractions of a sample, as integer codes (``sample_design``).

    Attributes:
      stratum: stratum code of each household, shape (n,).
      psu: PSU code of each household, unique across strata, shape (n,).
      psu_stratum: stratum of each PSU, shape (number of PSUs,).
      psu_count: PSUs sampled in each stratum, shape (number of strata,).
      fraction: sampling fraction of each stratum (0 without fpc), shape (number of strata,).
    """

    stratum: np.ndarray
    psu: np.ndarray
    psu_stratum: np.ndarray
    psu_count: np.ndarray
    fraction: np.ndarray


def sample_design(
    n: int,
    *,
    strata: ArrayLike | None = None,
    clusters: ArrayLike | None = None,
    fpc: ArrayLike | None = None,
) -> SampleDesign:
    """Codes the sample design: strata, clusters (nested within strata) and the fpc.

    Args:
      n: number of households.
      strata: stratum label of each household, shape (n,), or None (one stratum).
      clusters: PSU (cluster) label of each household, shape (n,), or None (each household is its
        own PSU). Labels are nested within strata: the same label in two strata is two PSUs.
      fpc: None (with replacement), a number, or one value per household, constant within a
        stratum: the population number of PSUs of the stratum (> 1) or its sampling fraction (<= 1),
        as R's ``svydesign(fpc=)``.

    Returns:
      A ``SampleDesign``.
    """
    stratum = _labels("strata", strata, n)
    stratum = np.zeros(n, np.int64) if stratum is None else stratum
    cluster = _labels("clusters", clusters, n)
    cluster = np.arange(n) if cluster is None else cluster
    pairs, psu = np.unique(np.stack([stratum, cluster], axis=1), axis=0, return_inverse=True)
    psu = psu.reshape(-1)
    psu_stratum = pairs[:, 0]
    psu_count = np.bincount(psu_stratum, minlength=stratum.max() + 1)
    fraction = _sampling_fractions(fpc, stratum, psu_count, n)
    return SampleDesign(stratum, psu, psu_stratum, psu_count, fraction)


def design_variance(
    scores: ArrayLike,
    *,
    strata: ArrayLike | None = None,
    clusters: ArrayLike | None = None,
    fpc: ArrayLike | None = None,
) -> np.ndarray:
    """The design variance of ``sum_j scores_j``: the ultimate-cluster estimator (module docstring).

    Args:
      scores: shape (n,) or (n, k) for k statistics at once.
      strata: stratum label per household, or None.
      clusters: PSU label per household (nested within strata), or None.
      fpc: population PSU counts or sampling fractions per stratum (see ``sample_design``), or None.

    Returns:
      The variance, a float64 scalar array or shape (k,).

    Raises:
      ValueError: a stratum with a single PSU sampled (unless its fpc makes it a certainty
        stratum), or malformed labels or fpc.
    """
    e = np.asarray(scores, np.float64)
    if e.ndim not in (1, 2):
        raise ValueError(f"scores must have shape (n,) or (n, k), got {e.shape}.")
    checks.check_finite("scores", e)
    design = sample_design(e.shape[0], strata=strata, clusters=clusters, fpc=fpc)
    return _variance(e, design)


def _variance(e: np.ndarray, design: SampleDesign) -> np.ndarray:
    flat = e.reshape(e.shape[0], -1)
    n_psu = design.psu_stratum.size
    totals = np.zeros((n_psu, flat.shape[1]))
    np.add.at(totals, design.psu, flat)
    counts = design.psu_count[design.psu_stratum]
    stratum_mean = np.zeros((design.psu_count.size, flat.shape[1]))
    np.add.at(stratum_mean, design.psu_stratum, totals)
    stratum_mean /= np.maximum(design.psu_count, 1)[:, None]
    dev = totals - stratum_mean[design.psu_stratum]
    lonely = (design.psu_count == 1) & (design.fraction < 1)
    if lonely.any():
        h = int(np.flatnonzero(lonely)[0])
        raise ValueError(
            f"stratum {h} (the {h + 1}-th stratum label in sorted order) has a single PSU, whose "
            f"variance cannot be estimated; merge it with a similar stratum (or give fpc making it a "
            f"certainty stratum)."
        )
    factor = (1 - design.fraction[design.psu_stratum]) * counts / np.maximum(counts - 1, 1)
    var = np.sum(factor[:, None] * dev * dev, axis=0)
    return var.reshape(e.shape[1:]) if e.ndim == 2 else var.reshape(())


# --------------------------------------------------------------------------------------------
# Linearisation of calibrated estimators
# --------------------------------------------------------------------------------------------


def _greg_fitted_impl(gram: DenseGram | PaddedGram, design: Array, z: Array) -> Array:
    """``x_j' B`` for each column of z (n, k): the fitted values of the d-weighted regression on M."""
    hess = gram.gram(design)

    def fit(col):
        return gram.rmatvec(classical.solve_psd(hess, gram.matvec(design * col)))

    return jax.vmap(fit, in_axes=1, out_axes=1)(z)


_greg_fitted = jax.jit(_greg_fitted_impl)


def greg_scores(cal: classical.ClassicalCalibration, z: np.ndarray) -> np.ndarray:
    """The linearised scores ``w_j (z_j - x_j' B)`` of the total of each column of z, shape (n, k)."""
    dt = classical.dtype_of(cal.gram)
    with classical.precision_of(cal.gram):
        fitted = _greg_fitted(cal.gram, jnp.asarray(cal.design_weights, dt), jnp.asarray(z, dt))
        fitted = np.asarray(fitted, np.float64)
    return np.asarray(cal.weights, np.float64)[:, None] * (z - fitted)


@dataclasses.dataclass(frozen=True)
class SurveyEstimate:
    """A calibrated estimate with its standard error.

    Attributes:
      estimate: the total or mean, a float or an array of shape (k,) (one per column of y).
      se: its standard error, same shape.
      kind: ``"total"`` or ``"mean"``.
      method: ``"linearization"``, or the replicate method (``"JK1"``, ``"JKn"``, ``"bootstrap"``).
    """

    estimate: float | np.ndarray
    se: float | np.ndarray
    kind: str
    method: str

    @property
    def variance(self) -> float | np.ndarray:
        """``se ** 2``."""
        return np.square(self.se)

    @property
    def cv(self) -> float | np.ndarray:
        """Coefficient of variation ``se / |estimate|``."""
        return np.asarray(self.se) / np.abs(np.asarray(self.estimate))

    def __repr__(self) -> str:
        est, se = np.atleast_1d(self.estimate), np.atleast_1d(self.se)
        body = ", ".join(f"{e:.6g} (SE {s:.4g})" for e, s in zip(est, se, strict=True))
        return f"SurveyEstimate({self.kind}: {body}; {self.method})"


def _values(y: ArrayLike, n: int) -> tuple[np.ndarray, bool]:
    arr = np.asarray(y, np.float64)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, k), one row per household, got {arr.shape}.")
    checks.check_finite("y", arr)
    return arr.reshape(n, -1), arr.ndim == 1


def _shape(x: np.ndarray, single: bool) -> Any:
    return float(x[0]) if single else x


def calibrated_total(
    cal: classical.ClassicalCalibration,
    y: ArrayLike,
    *,
    strata: ArrayLike | None = None,
    clusters: ArrayLike | None = None,
    fpc: ArrayLike | None = None,
) -> SurveyEstimate:
    """The calibrated total ``sum_j w_j y_j`` and its linearised (GREG residual) standard error.

    Args:
      cal: a ``ClassicalCalibration`` (from ``calibrate_classical``).
      y: the variable, shape (n,), or (n, k) for k variables.
      strata: stratum label per household, or None.
      clusters: PSU label per household (nested within strata), or None (each household a PSU).
      fpc: population PSU counts (> 1) or sampling fractions (<= 1) per stratum, or None (with
        replacement); one number, or one value per household.

    Returns:
      A ``SurveyEstimate`` (``kind="total"``, ``method="linearization"``).
    """
    n = cal.weights.shape[0]
    z, single = _values(y, n)
    design = sample_design(n, strata=strata, clusters=clusters, fpc=fpc)
    w = np.asarray(cal.weights, np.float64)
    est = w @ z
    se = np.sqrt(_variance(greg_scores(cal, z), design))
    return SurveyEstimate(_shape(est, single), _shape(se, single), "total", "linearization")


def calibrated_mean(
    cal: classical.ClassicalCalibration,
    y: ArrayLike,
    *,
    strata: ArrayLike | None = None,
    clusters: ArrayLike | None = None,
    fpc: ArrayLike | None = None,
) -> SurveyEstimate:
    """The calibrated mean ``sum_j w_j y_j / sum_j w_j`` and its linearised standard error.

    The mean is the total of ``(y - mean) / sum(w)`` to first order (R's ``svymean``).

    Args:
      cal: a ``ClassicalCalibration``.
      y: shape (n,) or (n, k).
      strata: see ``calibrated_total``.
      clusters: see ``calibrated_total``.
      fpc: see ``calibrated_total``.

    Returns:
      A ``SurveyEstimate`` (``kind="mean"``).
    """
    n = cal.weights.shape[0]
    z, single = _values(y, n)
    design = sample_design(n, strata=strata, clusters=clusters, fpc=fpc)
    w = np.asarray(cal.weights, np.float64)
    size = w.sum()
    mean = w @ z / size
    se = np.sqrt(_variance(greg_scores(cal, (z - mean) / size), design))
    return SurveyEstimate(_shape(mean, single), _shape(se, single), "mean", "linearization")


# --------------------------------------------------------------------------------------------
# Replicate weights
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplicateWeights:
    """Replicate design weights and the constants of their variance formula.

    The variance of a statistic is ``scale * sum_r rscales[r] * (theta_r - center)^2``, with
    ``center`` the mean of the replicate estimates (or the full-sample estimate when ``mse``).

    Attributes:
      weights: replicate design weights, shape (R, n).
      scale: the overall factor.
      rscales: per-replicate factors, shape (R,).
      method: ``"JK1"``, ``"JKn"`` or ``"bootstrap"``.
      mse: center on the full-sample estimate instead of the replicates' mean.
    """

    weights: np.ndarray
    scale: float
    rscales: np.ndarray
    method: str
    mse: bool = False

    def variance(self, replicate_estimates: ArrayLike, full_estimate: ArrayLike) -> np.ndarray:
        """The replicate variance from estimates of shape (R,) or (R, k) and the full-sample one."""
        theta = np.asarray(replicate_estimates, np.float64)
        center = np.asarray(full_estimate, np.float64) if self.mse else theta.mean(axis=0)
        dev = theta - center
        r = self.rscales.reshape((-1,) + (1,) * (theta.ndim - 1))
        return self.scale * np.sum(r * dev * dev, axis=0)


def replicate_weights(
    design_weights: ArrayLike,
    *,
    method: ReplicateMethod = "JK1",
    strata: ArrayLike | None = None,
    clusters: ArrayLike | None = None,
    fpc: ArrayLike | None = None,
    replicates: int = 200,
    key: jax.Array | int | None = None,
    mse: bool = False,
) -> ReplicateWeights:
    """Jackknife or bootstrap replicates of the design weights (R's ``as.svrepdesign``).

    * ``"JK1"``: one replicate per PSU of an unstratified design: the PSU's weights set to 0, the
      others multiplied by ``n / (n - 1)``; ``scale = (1 - f)(n - 1) / n``.
    * ``"JKn"``: one replicate per PSU of each stratum, reweighting within its stratum by
      ``n_h / (n_h - 1)``; ``rscales = (1 - f_h)(n_h - 1) / n_h``.
    * ``"bootstrap"``: Rao & Wu's (1988) rescaling bootstrap: in each stratum ``n_h - 1`` PSUs
      drawn with replacement, weights multiplied by ``1 - l + l n_h / (n_h - 1) * (times drawn)``
      with ``l = sqrt(1 - f_h)``; ``scale = 1 / (R - 1)``.

    Args:
      design_weights: shape (n,), >= 0.
      method: ``"JK1"``, ``"JKn"`` or ``"bootstrap"``.
      strata: stratum label per household (not for JK1), or None.
      clusters: PSU label per household (nested within strata), or None (each household a PSU).
      fpc: population PSU counts or sampling fractions per stratum (see ``calibrated_total``).
      replicates: number of bootstrap replicates, >= 2.
      key: an integer seed or a JAX PRNG key, required for the bootstrap (no global RNG).
      mse: center the variance on the full-sample estimate (R's ``mse=TRUE``).

    Returns:
      A ``ReplicateWeights``.
    """
    checks.check_choice("method", method, REPLICATE_METHODS)
    d = checks.real_array("design_weights", design_weights)
    if d.ndim != 1:
        raise ValueError(f"design_weights must have shape (n,), got {d.shape}.")
    checks.check_nonnegative("design_weights", d)
    n = d.shape[0]
    if method == "JK1" and strata is not None:
        raise ValueError("method='JK1' is the unstratified jackknife; with strata use method='JKn'.")
    design = sample_design(n, strata=strata, clusters=clusters, fpc=fpc)
    count = design.psu_count[design.psu_stratum]  # n_h of each PSU's stratum
    if np.any(count < 2):
        raise ValueError(
            "every stratum needs at least 2 PSUs for replicate weights; merge strata with a single PSU."
        )
    if method in ("JK1", "JKn"):
        n_psu = design.psu_stratum.size
        factor = count / (count - 1.0)
        own = design.psu[None, :] == np.arange(n_psu)[:, None]  # (R, n): household j in PSU r
        same = design.stratum[None, :] == design.psu_stratum[:, None]  # household j in PSU r's stratum
        weights = d[None, :] * np.where(own, 0.0, np.where(same, factor[:, None], 1.0))
        rscales = (1 - design.fraction[design.psu_stratum]) * (count - 1.0) / count
        if method == "JK1":
            return ReplicateWeights(weights, float(rscales[0]), np.ones(n_psu), "JK1", mse)
        return ReplicateWeights(weights, 1.0, rscales, "JKn", mse)
    replicates = checks.check_int_at_least("replicates", replicates, 2)
    if key is None:
        raise ValueError("method='bootstrap' draws at random: pass key= (an integer seed or a JAX PRNG key).")
    rng = _host_rng(key)
    lam = np.sqrt(1 - design.fraction)[design.psu_stratum]
    times = np.zeros((replicates, design.psu_stratum.size))  # times each PSU is drawn, per replicate
    for h in range(design.psu_count.size):
        members = np.flatnonzero(design.psu_stratum == h)
        k = members.size
        draws = rng.integers(0, k, (replicates, k - 1)) + k * np.arange(replicates)[:, None]
        times[:, members] = np.bincount(draws.ravel(), minlength=replicates * k).reshape(replicates, k)
    factors = 1 - lam + lam * count / (count - 1.0) * times
    return ReplicateWeights(
        d[None, :] * factors[:, design.psu], 1.0 / (replicates - 1), np.ones(replicates), "bootstrap", mse
    )


def _host_rng(key: Any) -> np.random.Generator:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return np.random.default_rng([int(key), 0x5EED])
    if isinstance(key, jax.Array):
        from l0jax._src.calibration.model import host_rng

        return host_rng(key, 0x5EED)
    raise ValueError(f"key must be an integer seed or a JAX PRNG key, got {key!r}.")


# --------------------------------------------------------------------------------------------
# Recalibrated replicates
# --------------------------------------------------------------------------------------------


def _replicates_impl(method, gram, targets, designs, lower, upper, scale, tol, max_iter):
    def solve(d):
        return classical.solve_impl(method, gram, targets, d, lower, upper, scale, tol, max_iter)

    state, g = jax.vmap(solve)(designs)
    return state.iterations, state.converged, g


solve_replicates = jax.jit(_replicates_impl, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class ReplicateCalibration:
    """Replicate weights recalibrated to the same totals (``recalibrate_replicates``).

    Attributes:
      weights: the calibrated replicate weights, shape (R, n).
      iterations: Newton steps of each replicate, shape (R,).
      converged: whether each replicate converged, shape (R,).
      replicates: the ``ReplicateWeights`` they came from.
      full: the full-sample ``ClassicalCalibration``.
    """

    weights: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    replicates: ReplicateWeights
    full: classical.ClassicalCalibration

    def total(self, y: ArrayLike) -> SurveyEstimate:
        """The full-sample calibrated total of y (shape (n,) or (n, k)) with its replicate standard error."""
        z, single = _values(y, self.weights.shape[1])
        est = np.asarray(self.full.weights, np.float64) @ z
        var = self.replicates.variance(self.weights @ z, est)
        return SurveyEstimate(
            _shape(est, single), _shape(np.sqrt(var), single), "total", self.replicates.method
        )

    def mean(self, y: ArrayLike) -> SurveyEstimate:
        """The full-sample calibrated mean of y with its replicate standard error."""
        z, single = _values(y, self.weights.shape[1])
        w = np.asarray(self.full.weights, np.float64)
        est = w @ z / w.sum()
        theta = (self.weights @ z) / self.weights.sum(axis=1)[:, None]
        var = self.replicates.variance(theta, est)
        return SurveyEstimate(
            _shape(est, single), _shape(np.sqrt(var), single), "mean", self.replicates.method
        )


def recalibrate_replicates(
    cal: classical.ClassicalCalibration, replicates: ReplicateWeights
) -> ReplicateCalibration:
    """Recalibrates every replicate of the design weights to ``cal``'s totals, in one compiled run.

    Each replicate's design weights go through the same Newton's method as ``cal`` (same method,
    bounds, tolerance and iteration cap), all replicates at once under ``vmap``: one compilation
    for any number of replicates of a given count, none for new replicate weights or totals.

    Args:
      cal: the full-sample ``ClassicalCalibration``.
      replicates: a ``ReplicateWeights`` of the same households.

    Returns:
      A ``ReplicateCalibration``; ``.total(y)`` and ``.mean(y)`` give replicate standard errors.
    """
    if not isinstance(replicates, ReplicateWeights):
        raise TypeError(
            f"replicates must be a ReplicateWeights (l0jax.replicate_weights), got "
            f"{type(replicates).__name__}."
        )
    n = cal.weights.shape[0]
    if replicates.weights.shape[1] != n:
        raise ValueError(
            f"replicates has weights for {replicates.weights.shape[1]} households, the calibration {n}."
        )
    dt = classical.dtype_of(cal.gram)
    lower, upper = cal.bounds
    with classical.precision_of(cal.gram):
        scale = classical.residual_scale(cal.gram, cal.design_weights, cal.targets)
    with classical.precision_of(cal.gram):
        args = [jnp.asarray(a, dt) for a in (cal.targets, replicates.weights, lower, upper, scale, cal.tol)]
        iterations, converged, g = jax.device_get(
            solve_replicates(cal.method, cal.gram, *args, jnp.asarray(cal.max_iter, jnp.int32))
        )
    converged = np.asarray(converged)
    if not converged.all():
        bad = np.flatnonzero(~converged)
        warnings.warn(
            f"{bad.size} of {converged.size} replicates did not converge (first: {bad[:5].tolist()}); "
            f"their totals may be unreachable within the bounds once a PSU is dropped. Their weights are "
            f"kept; see .converged.",
            CalibrationWarning,
            stacklevel=2,
        )
    weights = replicates.weights.astype(np.asarray(g).dtype) * np.asarray(g)
    return ReplicateCalibration(weights, np.asarray(iterations), converged, replicates, cal)
