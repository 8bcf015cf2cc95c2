"""Properties of the regression models (SparseL0Linear, SparseL0Logistic) and l0_path.

X is always 8 samples x 3 features (one compiled loop per model); fits run 5 epochs. The checks do
not depend on what the fit selects: predictions are ``X @ coef_ + intercept_`` whatever the support.
"""

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy import special

import l0jax
from tests.properties.support import ALL_DTYPES, MATRIX_KINDS, WRONG_TYPES, arrays, as_format, cast, outcome

X_SHAPE = (8, 3)
ELEMENTS = st.sampled_from([0.0, 1e-30, 1e-3, 0.5, -0.7, 1.0, -2.0, 3.0, 1e4, -1e4])


@st.composite
def designs(draw):
    """(X as given, X as float64 or None when it must be refused, its dtype)."""
    dense = draw(arrays(X_SHAPE, elements=ELEMENTS))
    kind = draw(st.sampled_from(MATRIX_KINDS))
    dtype = draw(st.sampled_from(ALL_DTYPES)) if kind == "ndarray" else np.float64
    shape_flaw = draw(st.sampled_from([None] * 8 + ["1d", "empty"]))
    if shape_flaw == "1d":
        dense = dense[:, 0]
    elif shape_flaw == "empty":
        dense = dense[:0]
    if kind == "ndarray" or dense.ndim != 2:
        X = cast(dense, dtype)
    else:
        X = as_format(dense, kind)
    real = np.dtype(dtype).kind in "biufO" or np.dtype(dtype) == np.dtype("bfloat16")
    exact = cast(dense, dtype).astype(np.float64) if real and shape_flaw is None else None
    if exact is not None and not np.all(np.isfinite(exact)):
        exact = None
    return X, exact


def _targets(draw, n, kind):
    base = np.linspace(-1.0, 2.0, n) if kind == "linear" else (np.arange(n) % 2).astype(float)
    t_kind = draw(st.sampled_from(["array", "list", "column", "int", "short", "nan", "text", "wrong"]))
    y = {
        "array": base,
        "list": base.tolist(),
        "column": base[:, None],
        "int": base.astype(np.int64),
        "short": base[:-1],
        "nan": np.where(np.arange(n) == 0, np.nan, base),
        "text": base.astype(str),
        "wrong": draw(WRONG_TYPES),
    }[t_kind]
    ok = t_kind in ("array", "list", "column", "int") or (kind == "logistic" and t_kind == "text")
    return y, ok


def _quiet(call):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return call()

    return run


@given(design=designs(), data=st.data())
def test_sparse_l0_linear_predicts_x_times_its_coefficients(design, data):
    X, exact = design
    y, y_ok = _targets(data.draw, 8, "linear")
    model = l0jax.SparseL0Linear(n_features=3, seed=0)
    fitted = outcome(_quiet(lambda: model.fit(X, y, epochs=5)), ["X", "X_sparse", "y"])
    valid = exact is not None and y_ok
    assert (fitted is not None) == valid
    if not valid:
        return
    coef, b = model.coef_, model.intercept_
    assert coef.shape == (3,) and np.all(np.isfinite(coef)) and np.isfinite(b)
    pred = np.asarray(model.predict(X), np.float64)
    assert pred.shape == (8,)
    expected = exact @ coef.astype(np.float64) + b
    np.testing.assert_allclose(
        pred, expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(exact).max() * np.abs(coef).sum())
    )


@given(design=designs(), data=st.data())
def test_sparse_l0_logistic_gives_probabilities_and_labels(design, data):
    X, exact = design
    y, y_ok = _targets(data.draw, 8, "logistic")
    model = l0jax.SparseL0Logistic(n_features=3, seed=0)
    fitted = outcome(_quiet(lambda: model.fit(X, y, epochs=5)), ["X", "X_sparse", "y"])
    valid = exact is not None and y_ok
    assert (fitted is not None) == valid
    if not valid:
        return
    proba = np.asarray(model.predict_proba(X), np.float64)
    labels = np.asarray(model.predict(X))
    assert proba.shape in ((8,), (8, 2))
    positive = proba if proba.ndim == 1 else proba[:, 1]
    # The positive class's probability is the sigmoid of the decision function.
    logits = np.asarray(model.decision_function(X), np.float64)
    np.testing.assert_allclose(positive, special.expit(logits), rtol=1e-5, atol=1e-7)
    assert labels.shape == (8,) and set(labels.tolist()) <= set(np.asarray(model.classes_).tolist())
    np.testing.assert_array_equal(labels == model.classes_[1], positive > 0.5)


@given(
    labels=st.sampled_from([[0, 1], ["no", "yes"], [0, 1, 2], [1], [True, False], [0.5, 2.5]]),
)
def test_sparse_l0_logistic_needs_two_classes(labels):
    X = np.arange(24.0).reshape(X_SHAPE) / 10
    y = [labels[i % len(labels)] for i in range(8)]
    model = l0jax.SparseL0Logistic(n_features=3, seed=0)
    fitted = outcome(lambda: model.fit(X, y, epochs=5), ["y"])
    assert (fitted is not None) == (len(set(labels)) == 2)
    if fitted is not None:
        assert sorted(np.asarray(model.classes_).tolist()) == sorted(set(labels))


@given(
    design=designs(),
    lambdas=st.one_of(
        st.sampled_from([[0.0, 0.1], [1e-3], (0.01, 0.02, 0.03)]),
        st.sampled_from([[], [-0.1], [np.nan], "0.1", None, [[0.1]]]),
    ),
    kind=st.sampled_from(["linear", "logistic", "poisson"]),
    data=st.data(),
)
def test_l0_path_fits_every_lambda_or_names_the_argument(design, lambdas, kind, data):
    X, exact = design
    y, y_ok = _targets(data.draw, 8, "logistic" if kind == "logistic" else "linear")
    grid_ok = isinstance(lambdas, (list, tuple)) and len(lambdas) > 0
    grid_ok = grid_ok and all(isinstance(v, float) and v >= 0 for v in lambdas)
    valid = exact is not None and y_ok and grid_ok and kind != "poisson"
    path = outcome(
        _quiet(lambda: l0jax.l0_path(X, y, lambdas, kind=kind, epochs=5)), ["X", "y", "lambdas", "kind"]
    )
    assert (path is not None) == valid
    if not valid:
        return
    k = len(lambdas)
    assert path.coef.shape == (k, 3) and path.intercept.shape == (k,) and path.gates.shape == (k, 3)
    assert np.all(np.isfinite(path.coef)) and np.all(np.isfinite(path.train_loss))
    assert np.all((path.gates >= 0) & (path.gates <= 1))
    np.testing.assert_array_equal(path.lambdas, np.asarray(lambdas, np.float64))


@given(
    n_features=st.one_of(st.integers(-1, 4), st.sampled_from([2.0, "3", None, True])),
    init_keep_prob=st.sampled_from([0.5, 0.0, 1.0, -0.1, np.nan, "0.5"]),
    beta=st.sampled_from([2 / 3, 0.0, -1.0, np.inf, "x"]),
)
def test_regression_constructors_check_their_arguments(n_features, init_keep_prob, beta):
    valid = (
        isinstance(n_features, int)
        and not isinstance(n_features, bool)
        and n_features >= 1
        and isinstance(init_keep_prob, float)
        and 0 < init_keep_prob < 1
        and isinstance(beta, float)
        and 0 < beta < np.inf
    )
    for cls in (l0jax.SparseL0Linear, l0jax.SparseL0Logistic):
        model = outcome(
            lambda cls=cls: cls(n_features=n_features, init_keep_prob=init_keep_prob, beta=beta),
            ["n_features", "init_keep_prob", "beta", "temperature"],
        )
        assert (model is not None) == valid
        if valid:
            assert model.coef_.shape == (n_features,)
