"""Properties of the calibration entry points on matrices of every container, dtype and sparse format.

calibrate, SparseCalibrationWeights, calibrate_path, calibrate_classical and check_targets.

M is always 4 targets x 6 households (one compiled loop), fits run 3 epochs.
"""

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import l0jax
from tests.properties.support import (
    ALL_DTYPES,
    MATRIX_KINDS,
    NONFINITE,
    WRONG_TYPES,
    arrays,
    as_format,
    cast,
    outcome,
)

M_SHAPE = (4, 6)
POSITIVE = st.sampled_from([1e-6, 0.01, 0.3, 1.0, 2.0, 7.5, 1e3, 1e6])


@st.composite
def problems(draw):
    """(M as given, M as float64 or None when invalid, targets as given, targets as float64 or None)."""
    dense = draw(arrays(M_SHAPE, elements=POSITIVE, nonfinite=False))
    w0 = np.array(draw(st.lists(st.floats(0.5, 2.0), min_size=6, max_size=6)))
    exact_targets = dense @ w0
    kind = draw(st.sampled_from(MATRIX_KINDS))
    dtype = draw(st.sampled_from(ALL_DTYPES)) if kind == "ndarray" else np.float64
    flaw = draw(st.sampled_from(["none"] * 6 + ["nan", "shape", "empty", "huge"]))
    if flaw == "nan":
        dense = dense.copy()
        dense[draw(st.integers(0, 3)), draw(st.integers(0, 5))] = draw(NONFINITE)
    elif flaw == "shape":
        dense = dense[0]  # 1-D
    elif flaw == "empty":
        dense = dense[:0]
    elif flaw == "huge":
        dense = dense * 1e36  # beyond float32 once it reaches 3.4e38
    M = cast(dense, dtype) if kind == "ndarray" else (as_format(dense, kind) if dense.ndim == 2 else dense)
    m_ok = flaw == "none" or (flaw == "huge" and dense.max() < 3.4e38)
    m_ok = m_ok and (
        kind != "ndarray" or np.dtype(dtype).kind in "fiuO" or np.dtype(dtype) == np.dtype("bfloat16")
    )
    m_ok = m_ok and dtype is not np.bool_  # a 0/1 matrix is valid but rarely reaches the targets: kept apart
    exact_m = cast(dense, dtype).astype(np.float64) if m_ok else None
    if m_ok and kind == "ndarray" and dtype is not np.bool_:
        exact_targets = exact_m @ w0
    t_kind = draw(st.sampled_from(["array", "list", "column", "float32", "short", "nan", "text", "wrong"]))
    targets = {
        "array": exact_targets,
        "list": exact_targets.tolist(),
        "column": exact_targets[:, None],
        "float32": exact_targets.astype(np.float32),
        "short": exact_targets[:3],
        "nan": np.where(np.arange(4) == draw(st.integers(0, 3)), np.nan, exact_targets),
        "text": exact_targets.astype(str),
        "wrong": draw(WRONG_TYPES),
    }[t_kind]
    t_ok = t_kind in ("array", "list", "column", "float32")
    return M, exact_m, targets, (np.asarray(targets, np.float64).reshape(-1) if t_ok else None), dtype


def _check_result(res, exact_m, n=6):
    assert res.weights.shape == (n,) and np.all(np.isfinite(res.weights))
    # exp(log_weight) * gate: zero exactly where the deterministic gate is closed.
    np.testing.assert_array_equal(res.weights > 0, res.gates > 0)
    np.testing.assert_allclose(
        res.predictions, exact_m @ res.weights.astype(np.float64), rtol=2e-5, atol=1e-30
    )
    assert np.all(np.isfinite(res.history["loss"]))


def _quiet(call):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", l0jax.CalibrationWarning)
            return call()

    return run


@given(problem=problems())
def test_calibrate_returns_consistent_weights_or_names_the_argument(problem):
    M, exact_m, targets, exact_t, dtype = problem
    if dtype is np.bool_:
        exact_m = np.asarray(M, np.float64) if M.ndim == 2 and M.size else None
    valid = exact_m is not None and exact_t is not None
    res = outcome(
        _quiet(lambda: l0jax.calibrate(M, targets, key=0, epochs=3, polish=False)), ["M", "targets"]
    )
    assert (res is not None) == valid
    if valid:
        _check_result(res, exact_m)
        np.testing.assert_array_equal(res.targets, exact_t)


@given(problem=problems())
def test_sparse_calibration_weights_fit_and_predict(problem):
    M, exact_m, targets, exact_t, dtype = problem
    if dtype is np.bool_:
        exact_m = np.asarray(M, np.float64) if M.ndim == 2 and M.size else None
    valid = exact_m is not None and exact_t is not None
    model = l0jax.SparseCalibrationWeights(n_features=6)
    fitted = outcome(_quiet(lambda: model.fit(M, targets, epochs=3, polish=False)), ["M", "y", "targets"])
    assert (fitted is not None) == valid
    if valid:
        w = model.get_weights(deterministic=True)
        assert w.shape == (6,)
        np.testing.assert_array_equal(w > 0, model.get_deterministic_gates() > 0)
        np.testing.assert_allclose(model.predict(M), exact_m @ w.astype(np.float64), rtol=2e-5)


@given(
    problem=problems(),
    lambdas=st.one_of(
        st.sampled_from([[1e-3, 1e-1], [0.0], [1e-2, 1e-2]]),
        st.sampled_from([[], [-1.0], [np.nan], "0.1", None, [["a"]]]),
    ),
    holdout=st.sampled_from([[0], [3], np.array([True, False, False, False]), 0.25, [4], [], 1.5, "x"]),
)
def test_calibrate_path_fits_every_grid_point_or_names_the_argument(problem, lambdas, holdout):
    M, exact_m, targets, exact_t, dtype = problem
    if dtype is np.bool_:
        exact_m = np.asarray(M, np.float64) if M.ndim == 2 and M.size else None
    grid_ok = (
        isinstance(lambdas, list)
        and len(lambdas) > 0
        and all(isinstance(v, float) and v >= 0 for v in lambdas)
    )
    hold_ok = not isinstance(holdout, (str, float)) or holdout == 0.25
    hold_ok = hold_ok and not (isinstance(holdout, list) and (holdout == [] or holdout == [4]))
    valid = exact_m is not None and exact_t is not None and grid_ok and hold_ok
    path = outcome(
        _quiet(lambda: l0jax.calibrate_path(M, targets, key=0, holdout=holdout, lambdas=lambdas, epochs=3)),
        ["M", "targets", "lambdas", "holdout"],
    )
    assert (path is not None) == valid
    if valid:
        k = len(lambdas)
        assert path.weights.shape == (k, 6) and np.all(np.isfinite(path.weights))
        assert path.holdout_rows.size == 1 and path.fit_rows.size == 3 and 0 <= path.best < k
        assert np.all(np.isfinite(path.fit_error)) and path.active.shape == (k,)


DESIGN = st.one_of(
    st.builds(lambda v: np.full(6, v), st.sampled_from([1.0, 10.0, 0.5])),
    st.sampled_from([5.0, [1.0] * 6, np.arange(1.0, 7.0)]),
    st.sampled_from([np.zeros(6), -np.ones(6), np.full(6, np.nan), np.ones(5), ["a"] * 6, None]),
)


@given(problem=problems(), design=DESIGN, method=st.sampled_from(["linear", "raking", "logit", "ridge"]))
def test_calibrate_classical_meets_feasible_targets_or_names_the_argument(problem, design, method):
    M, exact_m, targets, exact_t, dtype = problem
    if dtype is np.bool_:
        exact_m = np.asarray(M, np.float64) if M.ndim == 2 and M.size else None
    d = None
    if design is not None and (not isinstance(design, list) or design == [1.0] * 6):
        d = np.asarray(design, np.float64)
        d = np.full(6, float(d)) if d.ndim == 0 else (d if d.shape == (6,) else None)
    d_ok = d is not None and np.all(np.isfinite(d)) and np.all(d >= 0) and np.any(d > 0)
    valid = exact_m is not None and exact_t is not None and d_ok and method != "ridge"
    bounds = (0.05, 20.0) if method == "logit" else None  # logit needs them; wide enough for every d
    res = outcome(
        _quiet(lambda: l0jax.calibrate_classical(M, targets, design, method=method, bounds=bounds)),
        ["M", "targets", "design_weights", "method"],
    )
    assert (res is not None) == valid
    if valid:
        assert res.weights.shape == (6,) and res.residuals.shape == (4,)
        np.testing.assert_allclose(
            res.residuals, exact_m @ res.weights - exact_t, rtol=1e-4, atol=1e-6 * np.abs(exact_t).max()
        )
        if res.converged:  # the targets were met to the tolerance
            np.testing.assert_allclose(exact_m @ res.weights, exact_t, rtol=1e-4)


@given(problem=problems())
def test_check_targets_reports_or_names_the_argument(problem):
    M, exact_m, targets, exact_t, dtype = problem
    if dtype is np.bool_:
        exact_m = np.asarray(M, np.float64) if M.ndim == 2 and M.size else None
    valid = exact_m is not None and exact_t is not None
    out = outcome(_quiet(lambda: l0jax.check_targets(M, targets)), ["M", "targets"])
    if valid:
        assert out == []  # every target is reachable: M > 0 and the targets are M @ w with w > 0
    elif exact_t is None:
        assert out is None  # bad targets are named; a bad M may pass these cheap checks


@given(
    init=st.one_of(
        st.sampled_from([None, 1.0, 0.0, 2.5]), WRONG_TYPES, st.sampled_from([np.ones(5), -1.0, np.nan])
    )
)
def test_calibrate_init_weights_are_checked(init):
    M = np.arange(1.0, 25.0).reshape(M_SHAPE)
    y = M @ np.ones(6)
    valid = init is None or (isinstance(init, float) and init >= 0)
    res = outcome(
        _quiet(lambda: l0jax.calibrate(M, y, key=0, epochs=3, polish=False, init_weights=init)),
        ["init_weights"],
    )
    assert (res is not None) == valid
    if valid:
        assert res.weights.shape == (6,) and np.all(np.isfinite(res.weights))
