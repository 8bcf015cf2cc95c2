"""Matrix operators: ``M @ w`` and ``M.T @ r`` for dense and sparse matrices, passed to ``jit``.

Calibration and sparse regression only ever need two products with their matrix: ``M @ w`` (the
predictions) and ``M.T @ r`` (the gradient). This module wraps a matrix once, validated, into a
small operator that provides exactly these, and that is a registered pytree, so it is passed to
jitted functions as an *argument*: closing over a matrix inside ``jit`` makes XLA fold its indices
into the program as constants and compile for tens of seconds, and caching compiled programs by
shape alone gives stale answers for a second matrix of the same shape (l0-python's bug).

Interface (stable; other modules build on it):

``as_operator(M, *, backend="auto", dtype=jnp.float32, name="M", threads=None) -> MatrixOperator``
  ``M`` is a scipy sparse matrix or array (CSR, CSC, COO or any other scipy format), a NumPy array
  or a JAX array of shape (m, n); an operator is returned unchanged. It is checked once: 2-D,
  non-empty, real, finite, and with fewer than 2**31 stored entries; errors are ``ValueError`` and
  name the argument (``name``). ``backend`` is one of:

  * ``"dense"``: a dense (m, n) array and XLA matmuls; best for small or dense matrices, and on
    accelerators whenever the matrix fits.
  * ``"sparse"``: the nonzeros with their row and column indices, sorted by row, and products by
    ``jax.ops.segment_sum``; pure XLA, runs on any device.
  * ``"scipy"``: scipy CSR kernels for ``M`` and for ``M.T`` run on the host behind
    ``jax.pure_callback`` with a ``custom_vjp`` (row blocks are spread over ``threads`` threads,
    since scipy releases the GIL; a product with a much shorter output than input runs as CSC
    products of the other orientation's blocks; see ``host_operators``). On CPU this is
    several times faster than XLA's scatter.
  * ``"auto"``: off CPU, ``"dense"`` when the matrix is small or dense and fits in memory, else
    ``"sparse"``; on CPU, whichever of ``"dense"`` and ``"scipy"`` a cost rule measured on CPUs
    predicts to be faster (see ``choose_backend``).

``MatrixOperator`` (``DenseOperator``, ``SparseOperator``, ``ScipyOperator``):
  ``op.shape`` (static ``(m, n)``), ``op.dtype``, ``op.backend``, ``op.matvec(w)`` (``M @ w``,
  ``w`` of shape (n,), result (m,)), ``op.rmatvec(r)`` (``M.T @ r``, ``r`` of shape (m,), result
  (n,)), ``op @ w``. Both products are differentiable (reverse mode) in their vector argument and
  work under ``jit``, ``grad`` and ``vmap`` (a batch of vectors). Vectors are cast to ``op.dtype``.

Example::

    op = as_operator(scipy.sparse.random(200, 10_000, density=0.3, format="csr"))
    loss = jax.jit(lambda op, w: jnp.sum(op.matvec(w) ** 2))   # op is an argument, not a constant
    g = jax.grad(lambda w: jnp.sum(op.matvec(w) ** 2))(jnp.ones(10_000))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal, cast, get_args

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.core import Tracer
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks, host_operators

Array = jax.Array
# An operator's arrays: on the device, or NumPy arrays about to be stacked and split over a mesh
# (calibration/sharding.py builds its block operators on the host).
Leaf = jax.Array | np.ndarray
Backend = Literal["auto", "dense", "sparse", "ell", "scipy"]
"""How a matrix is multiplied: chosen by size, dense XLA, BCOO, ELL (padded rows), or scipy on the host."""
BACKENDS: tuple[Backend, ...] = get_args(Backend)
MatrixLike = ArrayLike | sp.sparray | sp.spmatrix | Sequence[Sequence[float]]
"""A matrix as users pass it: a JAX or NumPy array, a scipy sparse matrix or array, or nested lists."""
_INT32_MAX = np.iinfo(np.int32).max

# Cost rule for backend="auto" on CPU, measured on a 2-core AMD EPYC (jax 0.10, scipy 1.17): a dense
# XLA matvec plus its transpose costs about 0.2 ns per matrix element; scipy's CSR kernels for M and
# M.T about 1.0 ns per stored entry plus about 0.3 ms of callback overhead per epoch (both products).
_DENSE_NS_PER_ELEMENT = 0.2
_SCIPY_NS_PER_NONZERO = 1.0
_SCIPY_OVERHEAD_NS = 3.0e5
# The dense path must fit: never materialise more than this many bytes for a sparse input.
_DENSE_MAX_BYTES = 1 << 30
# Off CPU, dense wins while the matrix is dense-ish or small.
_ACCEL_DENSE_MIN_DENSITY = 0.05
_ACCEL_DENSE_SMALL_ELEMENTS = 1 << 22

# --------------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------------


def _resolve_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f" or dt.itemsize < 4:
        raise ValueError(f"dtype must be float32 or float64, got {dt}.")
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype float64 needs 64-bit JAX: build the matrix inside a "
            "`with jax.enable_x64():` block, or use dtype=jnp.float32."
        )
    return dt


def is_sparse(M: object) -> bool:
    """``scipy.sparse.issparse``: whether ``M`` is a scipy sparse matrix or array, of any format.

    (scipy's type stubs narrow ``issparse`` to an abstract base that declares none of the attributes
    every sparse format has, ``shape``, ``format``, ``tocsr``; a plain bool leaves ``M`` as it was typed.)
    """
    return sp.issparse(M)


def _check_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D matrix of shape (targets, columns), got shape {shape}.")
    m, n = int(shape[0]), int(shape[1])
    if m == 0 or n == 0:
        raise ValueError(f"{name} is empty (shape {shape}); it needs at least one row and one column.")
    return m, n


def _check_real(name: str, dtype: np.dtype) -> None:
    if not checks.is_real_dtype(dtype):
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}; convert it with .astype(float).")


def _check_values(name: str, values: np.ndarray, dtype: np.dtype) -> None:
    """Finite, and (for a narrowing cast such as float64 -> float32) within ``dtype``'s range."""
    checks.check_finite(name, values)
    if values.dtype.kind == "f" and values.dtype.itemsize > dtype.itemsize and values.size:
        largest, limit = float(np.abs(values).max()), float(np.finfo(dtype).max)
        if largest > limit:
            raise ValueError(
                f"{name} has values up to {largest:.3g}, beyond {dtype}'s range "
                f"({limit:.3g}); rescale it (e.g. totals in thousands) or use "
                f"dtype=jnp.float64 inside `with jax.enable_x64():`."
            )


def canonical_csr(name: str, M: Any, dtype: np.dtype) -> sp.csr_matrix:
    """A CSR matrix with int32 indices, sorted column indices, no duplicates and ``dtype`` values.

    Copies only what must change: a float32 CSR with int32 sorted indices is used as it is.
    """
    _check_real(name, np.dtype(M.dtype))
    m, n = _check_shape(name, M.shape)
    if M.nnz > _INT32_MAX:
        raise ValueError(
            f"{name} has {M.nnz:,} stored entries, more than int32 indices can address "
            f"({_INT32_MAX:,}); split it into blocks of rows and calibrate each block."
        )
    if n > _INT32_MAX or m > _INT32_MAX:
        raise ValueError(f"{name} has shape {M.shape}; each dimension must be below {_INT32_MAX:,}.")
    csr = M if M.format == "csr" else M.tocsr()
    csr = sp.csr_matrix(csr) if not isinstance(csr, sp.csr_matrix) else csr  # csr_array -> csr_matrix view
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # also sorts the column indices of each row
    _check_values(name, csr.data, dtype)
    if csr.data.dtype != dtype or csr.indices.dtype != np.int32 or csr.indptr.dtype != np.int32:
        csr = sp.csr_matrix(
            (
                csr.data.astype(dtype, copy=False),
                csr.indices.astype(np.int32, copy=False),
                csr.indptr.astype(np.int32, copy=False),
            ),
            shape=(m, n),
            copy=False,
        )
    return csr


def _host_dense(name: str, M: Any, dtype: np.dtype) -> np.ndarray:
    arr = checks.real_array(name, M, None)
    if arr.dtype.kind == "V":  # bfloat16 (ml_dtypes): NumPy's own kernels need a native float
        arr = arr.astype(np.float32)
    _check_shape(name, arr.shape)
    _check_values(name, arr, dtype)
    return arr


def check_matrix(M: Any, *, name: str = "M", dtype: DTypeLike = np.float32) -> None:
    """Runs ``as_operator``'s checks of a host matrix (scipy sparse or NumPy) without building it.

    For callers that read ``M`` before calibrating (the command line) and must report a bad matrix
    before doing anything else with it.

    Raises:
      ValueError: as ``as_operator``.
    """
    dt = np.dtype(dtype)
    if not is_sparse(M):
        _host_dense(name, M, dt)
        return
    _check_real(name, np.dtype(M.dtype))
    _check_shape(name, M.shape)
    # Only these formats keep their stored values in .data (dia pads it, lil/dok hold lists or dicts).
    data = M.data if M.format in ("csr", "csc", "coo") else M.tocsr().data
    _check_values(name, np.asarray(data), dt)


def _check_jax_dense(name: str, M: Array, dtype: np.dtype) -> None:
    _check_real(name, np.dtype(M.dtype))
    _check_shape(name, M.shape)
    if isinstance(M, Tracer):
        return  # values unknown at trace time; checked where the matrix was made
    # Reduced on the device; only a matrix with a bad value comes to the host for the message.
    if jnp.issubdtype(M.dtype, jnp.floating) and not bool(jnp.isfinite(M).all()):
        checks.check_finite(name, M)
    if np.dtype(M.dtype).itemsize > dtype.itemsize and bool((jnp.abs(M) > np.finfo(dtype).max).any()):
        _check_values(name, np.asarray(M), dtype)


# --------------------------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------------------------


def choose_backend(
    shape: tuple[int, int], nnz: int, *, itemsize: int = 4, platform: str | None = None
) -> Backend:
    """The backend ``as_operator(..., backend="auto")`` picks for a matrix.

    On CPU it compares the predicted time of one ``M @ w`` plus one ``M.T @ r``: about
    0.2 ns per matrix element for a dense XLA matmul against about 1 ns per stored entry plus
    0.3 ms of callback overhead for the scipy CSR kernels (measured on a 2-core AMD EPYC), and
    never materialises a dense matrix above 1 GiB. Off CPU (GPU, TPU: the scipy kernels run on
    the host, so only pure XLA qualifies) it takes ``"dense"`` for small (< 4M elements) or
    dense-ish (density >= 5%) matrices that fit in 1 GiB, else ``"ell"``: of the pure-XLA sparse
    layouts it is the only one whose products (and their gradients) scatter one entry per chunk
    rather than one per nonzero, and accelerators serialise scatters into the same target
    (atomics) where gathers and dense sums stream. On CPU it measured 1.7-2.3x faster than
    ``"sparse"`` (segment sums over COO); ``benchmarks/device_check.py`` times every option on
    the accelerator at hand.

    Args:
      shape: ``(m, n)``.
      nnz: the number of stored (nonzero) entries.
      itemsize: bytes per value (4 for float32).
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``; the default JAX backend when None.

    Returns:
      ``"dense"``, ``"ell"`` or ``"scipy"``.
    """
    m, n = shape
    elements = m * n
    fits = elements * itemsize <= _DENSE_MAX_BYTES
    platform = platform or jax.default_backend()
    if platform != "cpu":
        dense_ish = nnz >= _ACCEL_DENSE_MIN_DENSITY * elements or elements <= _ACCEL_DENSE_SMALL_ELEMENTS
        return "dense" if fits and dense_ish else "ell"
    dense_ns = _DENSE_NS_PER_ELEMENT * elements
    scipy_ns = _SCIPY_NS_PER_NONZERO * nnz + _SCIPY_OVERHEAD_NS
    return "dense" if fits and dense_ns <= scipy_ns else "scipy"


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------


class MatrixOperator:
    """Common interface of the operators: static ``shape``, ``matvec`` and ``rmatvec``."""

    backend: str = ""
    shape: tuple[int, int]
    dtype: np.dtype

    def matvec(self, w: Array) -> Array:  # pragma: no cover - abstract
        """``M @ w`` for ``w`` of shape (n,), a vector of shape (m,)."""
        raise NotImplementedError

    def rmatvec(self, r: Array) -> Array:  # pragma: no cover - abstract
        """``M.T @ r`` for ``r`` of shape (m,), a vector of shape (n,)."""
        raise NotImplementedError

    def __matmul__(self, w: Array) -> Array:
        return self.matvec(w)

    def _vector(self, name: str, x: Any, size: int) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 1 or x.shape[0] != size:
            raise ValueError(
                f"{name} must be a vector of shape ({size},) for a matrix of shape {self.shape}, "
                f"got shape {x.shape}; use jax.vmap for a batch of vectors."
            )
        return x.astype(self.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={np.dtype(self.dtype).name})"


@jax.tree_util.register_pytree_node_class
class DenseOperator(MatrixOperator):
    """A dense (m, n) matrix on the device; products are XLA matmuls.

    Args:
      data: the matrix, shape (m, n).
    """

    backend = "dense"

    def __init__(self, data: Leaf):
        self.data = data
        # A (m, n) matrix; jax may unflatten with other leaves, which only pass through.
        self.shape = cast(tuple[int, int], tuple(int(d) for d in data.shape))
        self.dtype = np.dtype(data.dtype)

    def matvec(self, w: Array) -> Array:
        """``M @ w``: ``w`` of shape (n,) -> shape (m,)."""
        return jnp.matmul(self.data, self._vector("w", w, self.shape[1]))

    def rmatvec(self, r: Array) -> Array:
        """``M.T @ r``: ``r`` of shape (m,) -> shape (n,)."""
        return self._vector("r", r, self.shape[0]) @ self.data

    def tree_flatten(self):
        return (self.data,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


@jax.tree_util.register_pytree_node_class
class SparseOperator(MatrixOperator):
    """Nonzeros with row and column indices sorted by row; products by ``jax.ops.segment_sum``.

    Args:
      data: stored values, shape (nnz,).
      rows: row index of each value, int32, sorted ascending, shape (nnz,).
      cols: column index of each value, int32, shape (nnz,).
      shape: ``(m, n)``, static.
    """

    backend = "sparse"

    def __init__(self, data: Leaf, rows: Leaf, cols: Leaf, shape: tuple[int, int]):
        self.data, self.rows, self.cols = data, rows, cols
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(data.dtype)

    def matvec(self, w: Array) -> Array:
        """``M @ w``: ``w`` of shape (n,) -> shape (m,)."""
        w = self._vector("w", w, self.shape[1])
        return jax.ops.segment_sum(
            self.data * w[self.cols], self.rows, num_segments=self.shape[0], indices_are_sorted=True
        )

    def rmatvec(self, r: Array) -> Array:
        """``M.T @ r``: ``r`` of shape (m,) -> shape (n,)."""
        r = self._vector("r", r, self.shape[0])
        return jax.ops.segment_sum(self.data * r[self.rows], self.cols, num_segments=self.shape[1])

    def tree_flatten(self):
        return (self.data, self.rows, self.cols), self.shape

    @classmethod
    def tree_unflatten(cls, shape, children):
        data, rows, cols = children
        return cls(data, rows, cols, shape)


# -- the sliced-ELL backend (pure XLA, for accelerators) ----------------------------------------

# Chunk widths tried for a sliced-ELL layout, and the cost of one chunk in units of one padded
# entry: each chunk adds an entry to the segment sum that follows the dense row sums (a scatter,
# several times dearer per element than the streaming multiply-add).
_ELL_WIDTHS = tuple(2**k for k in range(11))
_ELL_CHUNK_COST = 8


def ell_costs(lengths: np.ndarray) -> np.ndarray:
    """The cost (padded entries + ``_ELL_CHUNK_COST`` per chunk) of each width of ``_ELL_WIDTHS``.

    Args:
      lengths: the number of stored entries of each row, shape (rows,).

    Returns:
      float64 costs, shape (len(_ELL_WIDTHS),).
    """
    lengths = np.asarray(lengths, np.int64)
    out = np.empty(len(_ELL_WIDTHS))
    for i, c in enumerate(_ELL_WIDTHS):
        chunks = int(np.sum(-(-lengths // c)))
        out[i] = chunks * (c + _ELL_CHUNK_COST)
    return out


def ell_width(costs: np.ndarray) -> int:
    """The width of ``_ELL_WIDTHS`` with the least cost (``ell_costs``, possibly summed over blocks)."""
    return _ELL_WIDTHS[int(np.argmin(costs))]


def ell_chunks(lengths: np.ndarray, width: int) -> int:
    """Number of chunks of ``width`` entries that rows of these ``lengths`` take."""
    return int(np.sum(-(-np.asarray(lengths, np.int64) // width)))


def ell_layout(
    csr: sp.csr_matrix, width: int, chunks: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a canonical CSR cut into chunks of ``width`` entries (sliced ELLPACK).

    Row ``r`` of length ``L`` takes ``ceil(L / width)`` consecutive chunks; unused slots hold the
    value 0 at column 0. Chunks are in row order, so their row ids are sorted.

    Args:
      csr: canonical CSR, shape (rows, cols).
      width: entries per chunk.
      chunks: pad to this many chunks (inert chunks of the last row), so that blocks of a sharded
        matrix share one shape; at least the chunks needed.

    Returns:
      ``(data, cols, rows)``: shapes (chunks, width), (chunks, width) int32, (chunks,) int32.
    """
    lengths = np.diff(csr.indptr).astype(np.int64)
    per_row = -(-lengths // width)
    need = int(per_row.sum())
    total = need if chunks is None else int(chunks)
    if total < need:
        raise ValueError(f"ell_layout: {need} chunks needed, {total} given.")
    total = max(total, 1)
    data = np.zeros((total, width), csr.dtype)
    cols = np.zeros((total, width), np.int32)
    rows = np.full(total, max(csr.shape[0] - 1, 0), np.int32)
    first = np.concatenate([[0], np.cumsum(per_row)])
    rows[:need] = np.repeat(np.arange(csr.shape[0], dtype=np.int32), per_row)
    # Row batches bound the int64 temporaries to a few million entries.
    step = max(1, int(csr.shape[0] * 4_000_000 / max(csr.nnz, 1)))
    flat_data, flat_cols = data.reshape(-1), cols.reshape(-1)
    for lo in range(0, csr.shape[0], step):
        hi = min(csr.shape[0], lo + step)
        a, b = int(csr.indptr[lo]), int(csr.indptr[hi])
        if a == b:
            continue
        row = np.repeat(np.arange(lo, hi), lengths[lo:hi])
        pos = np.arange(a, b, dtype=np.int64) - csr.indptr[row]
        slot = (first[row] + pos // width) * width + pos % width
        flat_data[slot] = csr.data[a:b]
        flat_cols[slot] = csr.indices[a:b]
    return data, cols, rows


def _chunked_product(parts: tuple[Array, Array, Array], x: Array, size: int) -> Array:
    data, cols, rows = parts
    # Gather, multiply and sum each chunk densely; only one entry per chunk is scattered.
    sums = jnp.sum(data * x[..., cols], axis=-1)
    if x.ndim > 1:  # a vmapped batch: (batch, chunks) -> sum over the chunks of each row
        return jax.vmap(lambda s: jax.ops.segment_sum(s, rows, num_segments=size, indices_are_sorted=True))(
            sums
        )
    return jax.ops.segment_sum(sums, rows, num_segments=size, indices_are_sorted=True)


# Each product's transpose is the other orientation's product (a gather), never XLA's transpose of
# the gather (a scatter of every entry).
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ell_product(a: tuple, b: tuple, x: Array, size_a: int, size_b: int) -> Array:
    return _chunked_product(a, x, size_a)


def _ell_fwd(a, b, x, size_a, size_b):
    return _chunked_product(a, x, size_a), (a, b)


def _ell_bwd(size_a, size_b, res, g):
    _, b = res
    return None, None, _chunked_product(b, g, size_b)


_ell_product.defvjp(_ell_fwd, _ell_bwd)


@jax.tree_util.register_pytree_node_class
class EllOperator(MatrixOperator):
    """Sliced ELLPACK layouts of M and of M.T; products are dense chunk sums plus a short segment sum.

    The rows of M (targets) and of M.T (households) are each cut into chunks of a fixed width
    (``ell_layout``): ``M @ w`` gathers ``w`` for every stored entry, sums each chunk densely and
    adds the chunk sums of each row (``segment_sum`` over sorted rows, one entry per chunk instead
    of one per nonzero). The transpose product uses M.T's own layout, so neither product (nor
    their gradients) scatters per nonzero. Pure XLA: the accelerator path for sparse matrices.

    Args:
      forward: ``(data, cols, rows)`` of M's layout.
      backward: ``(data, cols, rows)`` of M.T's layout.
      shape: ``(m, n)``, static.
    """

    backend = "ell"

    def __init__(
        self,
        fdata: Leaf,
        fcols: Leaf,
        frows: Leaf,
        bdata: Leaf,
        bcols: Leaf,
        brows: Leaf,
        *,
        shape: tuple[int, int],
    ):
        self.forward = (fdata, fcols, frows)
        self.backward = (bdata, bcols, brows)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(fdata.dtype)

    def matvec(self, w: Array) -> Array:
        """``M @ w``: ``w`` of shape (n,) -> shape (m,)."""
        return _ell_product(self.forward, self.backward, self._vector("w", w, self.shape[1]), *self.shape)

    def rmatvec(self, r: Array) -> Array:
        """``M.T @ r``: ``r`` of shape (m,) -> shape (n,)."""
        return _ell_product(
            self.backward, self.forward, self._vector("r", r, self.shape[0]), *self.shape[::-1]
        )

    def tree_flatten(self):
        return (*self.forward, *self.backward), self.shape

    @classmethod
    def tree_unflatten(cls, shape, children):
        return cls(*children, shape=shape)


def ell_parts(
    csr: sp.csr_matrix,
    transposed: sp.csr_matrix,
    fwd_width: int,
    bwd_width: int,
    fwd_chunks: int | None = None,
    bwd_chunks: int | None = None,
) -> tuple[np.ndarray, ...]:
    """The six arrays of an ``EllOperator`` (NumPy), from the canonical CSR of M and of M.T."""
    return (*ell_layout(csr, fwd_width, fwd_chunks), *ell_layout(transposed, bwd_width, bwd_chunks))


def _ell_from_csr(csr: sp.csr_matrix) -> EllOperator:
    transposed = csr.T.tocsr()
    widths = [ell_width(ell_costs(np.diff(c.indptr))) for c in (csr, transposed)]
    return EllOperator(*map(jnp.asarray, ell_parts(csr, transposed, *widths)), shape=csr.shape)


# -- the scipy (host) backend: its host side is host_operators.py ---------------------------


@jax.tree_util.register_pytree_node_class
class ScipyOperator(MatrixOperator):
    """scipy CSR kernels for ``M`` and ``M.T`` on the host, behind ``jax.pure_callback``.

    The only pytree leaf is an int32 token naming the matrices in a registry, so a jitted
    function compiled for one matrix serves every other matrix of the same shape, and always
    computes with the matrix it is given (nothing is cached by shape). The operator returned by
    ``as_operator`` holds the matrices; copies made by ``jax.tree`` operations find them through
    the token while the original is alive.

    Args:
      csr: a canonical CSR matrix (int32 indices, sorted, no duplicates) of the operator's dtype,
        or None when ``transposed`` is given.
      threads: number of threads to split each product over (by blocks of rows).
      transposed: instead of (or besides) ``csr``, the canonical CSR of M.T (M's CSC arrays);
        the other orientation is then built only if a product needs it.
    """

    backend = "scipy"

    def __init__(
        self,
        csr: sp.csr_matrix | None,
        threads: int | None = None,
        *,
        transposed: sp.csr_matrix | None = None,
    ):
        host = host_operators.HostMatrices(csr, threads or host_operators.default_threads(), transposed)
        token = host_operators.register(host)
        self._host = host
        self.token = np.int32(token)
        self.shape = host.shape
        source = csr if csr is not None else transposed
        assert source is not None  # HostMatrices needs one of the two
        self.dtype = np.dtype(source.dtype)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return host_operators.lookup(self.token).nnz

    def matvec(self, w: Array) -> Array:
        """``M @ w``: ``w`` of shape (n,) -> shape (m,)."""
        return host_operators.scipy_matvec(self.token, self._vector("w", w, self.shape[1]), self.shape)

    def rmatvec(self, r: Array) -> Array:
        """``M.T @ r``: ``r`` of shape (m,) -> shape (n,)."""
        return host_operators.scipy_rmatvec(self.token, self._vector("r", r, self.shape[0]), self.shape)

    def tree_flatten(self):
        return (self.token,), (self.shape, self.dtype.str)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        (obj.token,) = children
        obj.shape, dtype = aux
        obj.dtype = np.dtype(dtype)
        # A concrete copy keeps the matrices alive too; a traced one is only used inside a call.
        concrete = checks.concrete(obj.token)
        obj._host = None
        if concrete is not None and concrete.dtype.kind in "iu" and concrete.size:
            obj._host = host_operators.find(int(concrete.reshape(-1)[0]))
        return obj


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def as_operator(
    M: Any,
    *,
    backend: Backend = "auto",
    dtype: DTypeLike = jnp.float32,
    name: str = "M",
    threads: int | None = None,
) -> MatrixOperator:
    """Validates a matrix once and wraps it into an operator with ``matvec`` and ``rmatvec``.

    Args:
      M: the matrix, shape (m, n): a scipy sparse matrix or array (``csr_matrix``, ``csr_array``,
        ``csc``, ``coo``, ...), a NumPy array or a JAX array. An operator is returned as it is
        (after checking that ``backend`` agrees).
      backend: ``"auto"``, ``"dense"``, ``"sparse"`` or ``"scipy"`` (see the module docstring).
      dtype: float32 (default) or float64 (inside ``with jax.enable_x64():``); values are cast to it.
      name: the argument's name, used in error messages (e.g. ``"X"`` for a design matrix).
      threads: threads for the ``"scipy"`` backend's products; all available cores when None.

    Returns:
      A ``DenseOperator``, ``SparseOperator`` or ``ScipyOperator``.

    Raises:
      ValueError: ``M`` is not 2-D, is empty, holds NaN/inf or non-real values, has 2**31 or more
        stored entries, or ``backend``/``dtype`` is not one of the choices.
    """
    checks.check_choice("backend", backend, BACKENDS)
    if isinstance(M, MatrixOperator):
        if backend not in ("auto", M.backend):
            raise ValueError(
                f"{name} is already a {M.backend!r} operator but backend={backend!r} was asked; "
                f"pass the original matrix to convert it."
            )
        return M
    dt = _resolve_dtype(dtype)
    if threads is not None:
        threads = checks.check_int_at_least("threads", threads, 1)

    if is_sparse(M):
        csr = canonical_csr(name, M, dt)
        if backend == "auto":
            backend = choose_backend(csr.shape, csr.nnz, itemsize=dt.itemsize)
        if backend == "dense":
            return DenseOperator(jnp.asarray(csr.toarray()))
        if backend == "sparse":
            return _sparse_from_csr(csr)
        if backend == "ell":
            return _ell_from_csr(csr)
        return ScipyOperator(csr, threads)

    if isinstance(M, jax.Array):
        _check_jax_dense(name, M, dt)
        if backend in ("auto", "dense"):
            # Already on the device and already dense: keep it there.
            return DenseOperator(M.astype(dt))
        return as_operator(np.asarray(M), backend=backend, dtype=dt, name=name, threads=threads)

    if isinstance(M, (str, bytes)) or not hasattr(M, "__array__") and not isinstance(M, (list, tuple)):
        raise ValueError(
            f"{name} must be a scipy sparse matrix, a NumPy array or a JAX array, got {type(M).__name__}."
        )
    arr = _host_dense(name, M, dt)
    if backend == "auto":
        backend = choose_backend(arr.shape, int(np.count_nonzero(arr)), itemsize=dt.itemsize)
    if backend == "dense":
        return DenseOperator(jnp.asarray(arr.astype(dt, copy=False)))
    csr = canonical_csr(name, sp.csr_matrix(arr), dt)
    if backend == "ell":
        return _ell_from_csr(csr)
    return _sparse_from_csr(csr) if backend == "sparse" else ScipyOperator(csr, threads)


def sparse_parts(csr: sp.csr_matrix, nnz: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``"sparse"`` backend's arrays of a canonical CSR: values, rows (sorted), columns.

    Args:
      csr: canonical CSR, shape (m, n).
      nnz: pad the arrays to this length (>= csr.nnz) with inert entries (value 0 in the last
        row, column 0), so that blocks of a sharded matrix share one shape.

    Returns:
      ``(data, rows, cols)``, NumPy arrays of length ``nnz`` (or csr.nnz).
    """
    pad = 0 if nnz is None else nnz - csr.nnz
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int32), np.diff(csr.indptr))
    if pad:
        return (
            np.concatenate([csr.data, np.zeros(pad, csr.dtype)]),
            np.concatenate([rows, np.full(pad, csr.shape[0] - 1, np.int32)]),
            np.concatenate([csr.indices.astype(np.int32, copy=False), np.zeros(pad, np.int32)]),
        )
    return csr.data, rows, csr.indices


def _sparse_from_csr(csr: sp.csr_matrix) -> SparseOperator:
    data, rows, cols = sparse_parts(csr)
    return SparseOperator(jnp.asarray(data), jnp.asarray(rows), jnp.asarray(cols), csr.shape)
