"""Properties of the command line's file readers (``l0jax calibrate``'s matrix, targets and weights).

Each reader returns valid data or raises ``InputError`` naming the file (one line for the user);
never a NumPy, CSV or zip error of its own. Files are drawn: CSV text from a hostile alphabet,
arbitrary bytes, .npy/.npz arrays of every dtype and number of dimensions.
"""

import io
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from l0jax._src import cli
from tests.properties.support import ALL_DTYPES, SPARSE_FORMATS, arrays, cast

CELLS = st.one_of(
    st.sampled_from(
        ["1", "2.5", "-3", "0", "1e3", "1e400", "nan", "inf", "-inf", "", " ", "x", "value", "name"]
    ),
    st.text(alphabet="0123456789.,-+eE\"' \tab", max_size=6),
)
CSV_TEXT = st.lists(st.lists(CELLS, min_size=0, max_size=4), min_size=0, max_size=6).map(
    lambda rows: "\n".join(",".join(r) for r in rows)
)
BYTES = st.binary(max_size=64)


def _read(reader, name: str, content: bytes):
    """``reader(path)`` for a file ``name`` holding ``content``; None when it raised InputError naming it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return reader(path)
        except cli.InputError as err:
            assert str(err).startswith(str(path)), str(err)
            return None


@given(text=st.one_of(CSV_TEXT, st.sampled_from(["name,value\na,1\nb,2", "value\n3\n4", "5\n6", "a;1\nb;2"])))
def test_targets_csv_gives_named_finite_targets_or_names_the_file(text):
    out = _read(cli._read_targets, "targets.csv", text.encode())
    if out is not None:
        names, values = out
        assert values.ndim == 1 and values.size >= 1 and len(names) == values.size
        assert np.all(np.isfinite(values)) and values.dtype == np.float64


@given(content=BYTES)
def test_targets_and_weights_from_arbitrary_bytes_name_the_file(content):
    for reader, name in (
        (cli._read_targets, "t.csv"),
        (cli._read_weights, "w.csv"),
        (cli._read_weights, "w.npy"),
    ):
        out = _read(reader, name, content)
        if out is not None and reader is cli._read_weights:
            assert np.all(np.isfinite(out)) and np.all(out >= 0)


@given(text=CSV_TEXT)
def test_weights_csv_are_finite_and_non_negative_or_name_the_file(text):
    out = _read(cli._read_weights, "weights.csv", text.encode())
    if out is not None:
        assert out.ndim == 1 and out.dtype == np.float64 and np.all(np.isfinite(out)) and np.all(out >= 0)


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


@given(
    shape=st.sampled_from([(), (0,), (3,), (2, 3), (1, 1), (0, 3), (2, 2, 2)]),
    dtype=st.sampled_from([d for d in ALL_DTYPES if d is not None]),
    data=st.data(),
)
def test_npy_weights_and_matrices_of_any_dtype_are_read_or_name_the_file(shape, dtype, data):
    arr = cast(data.draw(arrays(shape)), dtype)
    content = _npy(arr)
    w = _read(cli._read_weights, "w.npy", content)
    if w is not None:
        assert w.ndim == 1 and w.dtype == np.float64 and np.all(np.isfinite(w)) and np.all(w >= 0)
        np.testing.assert_array_equal(w, arr.astype(np.float64).reshape(-1))
    M = _read(cli._read_matrix, "m.npy", content)
    if M is not None:
        assert M.ndim == 2 and M.shape == arr.shape
    assert M is None or len(shape) == 2


@given(
    fmt=st.sampled_from(SPARSE_FORMATS),
    container=st.sampled_from(["matrix", "array"]),
    extra=st.sampled_from([None, "dense2d", "dense1d", "two"]),
)
def test_npz_matrices_are_read_as_csr_or_name_the_file(fmt, container, extra):
    dense = np.arange(12.0).reshape(3, 4) % 3
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.npz"
        if extra is None:
            sparse = (sp.csr_matrix(dense) if container == "matrix" else sp.csr_array(dense)).asformat(fmt)
            if fmt not in ("csr", "csc", "coo", "bsr", "dia"):  # save_npz refuses lil and dok
                sparse = sparse.tocsr()
            sp.save_npz(path, sparse)
        elif extra == "two":
            np.savez(path, a=dense, b=dense)
        else:
            np.savez(path, a=dense if extra == "dense2d" else dense[0])
        try:
            M = cli._read_matrix(path)
        except cli.InputError as err:
            assert str(err).startswith(str(path))
            assert extra in ("dense1d", "two")
            return
    assert extra in (None, "dense2d")
    np.testing.assert_array_equal(M.toarray() if sp.issparse(M) else M, dense)


@given(content=BYTES, suffix=st.sampled_from([".npz", ".npy", ".csv", ".mtx"]))
def test_matrix_from_arbitrary_bytes_names_the_file(content, suffix):
    M = _read(cli._read_matrix, "m" + suffix, content)
    assert M is None or (M.ndim == 2 and suffix in (".npz", ".npy"))
