"""Shared strategies and the property every entry point must have.

The property: a call returns a result (which the test then checks: shape, range, a closed form), or
raises ``ValueError``/``TypeError`` whose message names the offending argument. Any other exception
(an IndexError, FloatingPointError, a JAX internal error) propagates and fails the test, and so does
an error that does not say which argument was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import ml_dtypes
import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

FLOAT_DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
ALL_DTYPES = (*FLOAT_DTYPES, np.int8, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object, np.str_)
SPARSE_FORMATS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")

# Magnitudes from subnormal to near float32's largest, with the values where things go wrong.
MAGNITUDES = st.sampled_from([0.0, 1e-45, 1e-30, 1e-8, 1e-3, 0.1, 0.5, 1.0, 2.0, 30.0, 1e4, 1e15, 1e30, 3e38])
SIGNED = st.builds(lambda m, s: s * m, MAGNITUDES, st.sampled_from([1.0, -1.0]))
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])

# Values of the wrong type for any argument that wants a number or an array.
WRONG_TYPES = st.sampled_from(["a", b"1", None, {"a": 1}, {1.0}, object(), [1.0, "b"], [[1.0], [2.0, 3.0]]])


class NamedError(AssertionError):
    pass


def outcome(call: Callable[[], Any], names: Iterable[str]) -> Any:
    """``call()``; None if it raised a ValueError or TypeError naming one of ``names``.

    Anything else, including a ValueError/TypeError that names none of them, fails the test.
    """
    names = tuple(names)
    try:
        return call()
    except (ValueError, TypeError) as err:
        text = str(err)
        if not any(re.search(rf"\b{re.escape(n)}\b", text) for n in names):
            raise NamedError(f"{type(err).__name__} names none of {names}: {text}") from err
        return None


def must_fail(call: Callable[[], Any], names: Iterable[str]) -> None:
    """``call()`` must raise a ValueError or TypeError naming one of ``names``."""
    result = outcome(call, names)
    assert result is None, f"expected an error naming {tuple(names)}, got a result {result!r}"


def cast(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` in ``dtype``; object arrays hold Python floats, text arrays their repr."""
    if dtype is object:
        return np.array([float(v) for v in values.ravel()], dtype=object).reshape(values.shape)
    if dtype is np.str_:
        return values.astype(str)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


@st.composite
def arrays(draw, shape: tuple[int, ...], *, elements=SIGNED, nonfinite: bool = True) -> np.ndarray:
    """A float64 array of ``shape`` from ``elements``, with NaN/inf at drawn places when ``nonfinite``."""
    size = int(np.prod(shape, dtype=np.int64))
    values = np.array(draw(st.lists(elements, min_size=size, max_size=size)), np.float64).reshape(shape)
    if nonfinite and size and draw(st.booleans()):
        where = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size))
        flat = values.reshape(-1)
        for i in where:
            flat[i] = draw(NONFINITE)
    return values


def as_format(dense: np.ndarray, kind: str) -> Any:
    """``dense`` (2-D) as a list, a NumPy array, or a scipy sparse matrix/array of format ``kind``."""
    if kind == "list":
        return dense.tolist()
    if kind == "ndarray":
        return dense
    fmt, container = kind.split("_")
    base = sp.csr_matrix(dense) if container == "matrix" else sp.csr_array(dense)
    return base.asformat(fmt)


MATRIX_KINDS = ("list", "ndarray") + tuple(f"{f}_{c}" for f in SPARSE_FORMATS for c in ("matrix", "array"))


def is_finite_real(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf" and bool(np.all(np.isfinite(values)))
