"""The calibration matrix as Newton's method needs it: ``M @ w``, ``M.T @ lam`` and ``M diag(v) M.T``.

Classical calibration (``classical.py``) and the linearised variance (``variance.py``) work with
the Lagrange multipliers of the m targets, so besides the two products of the L0 engine they need
the weighted Gram matrix ``H = M diag(v) M.T`` (m x m), the Hessian of the dual problem. Two
layouts, both registered pytrees passed to ``jit`` as arguments (never closed over):

* ``DenseGram``: M as a dense (m, n) array; ``H`` is one matrix product (BLAS), about 0.05-0.08 ns
  per element of ``m * m * n`` on 2 CPU cores.
* ``PaddedGram``: for each household (column of M) its nonzeros, padded to the largest count
  ``q`` (an "ELL" layout of M.T): ``idx`` and ``val`` of shape (n, q). ``M.T @ lam`` is a gather,
  ``M @ w`` a ``segment_sum``, and ``H`` sums ``v_j * val_ja * val_jb`` into cell
  ``(idx_ja, idx_jb)`` for the ``q (q + 1) / 2`` pairs ``a <= b`` of each household, in blocks of
  households so the pairs never all exist at once. Survey matrices have few nonzeros per
  household (one per categorical margin), so this costs ``n q^2 / 2`` where the dense product costs
  ``n m^2``: 0.8 s for 1,000,000 households, q = 10 and m = 500 on 2 cores (scipy's sparse
  ``M @ diag(v) @ M.T`` takes 3.0 s there; the dense product would take ~15 s and 4 GB).

``gram_matrix(M, ...)`` picks the layout by that cost rule (measured on a 2-core AMD EPYC, jax 0.10)
unless told. Both layouts work under ``vmap`` over ``v`` (replicate weights).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.typing import DTypeLike

from l0jax._src import checks
from l0jax._src.operators import check_matrix, is_sparse

Array = jax.Array
GramLayout = Literal["auto", "dense", "padded"]
"""How the Gram operator is stored: chosen by size, dense, or padded rows."""
LAYOUTS: tuple[GramLayout, ...] = get_args(GramLayout)

# Cost rule of layout="auto" (see the module docstring): ns per element of m*m*n for the dense
# product, ns per household pair (a <= b) for the padded one.
_DENSE_NS = 0.06
_PAIR_NS = 15.0
# Never materialise a dense matrix larger than this for a sparse input.
_DENSE_MAX_BYTES = 1 << 30
# Households per block of the padded Gram: bounds the pair arrays to about 65536 * q(q+1)/2 entries.
_BLOCK = 1 << 16


@jax.tree_util.register_pytree_node_class
class DenseGram:
    """M as a dense (m, n) array.

    Args:
      data: the matrix, shape (m, n).
    """

    layout = "dense"

    def __init__(self, data: Array):
        self.data = data
        self.shape = tuple(data.shape)

    def matvec(self, w: Array) -> Array:
        """``M @ w``: (n,) -> (m,)."""
        return self.data @ w

    def rmatvec(self, lam: Array) -> Array:
        """``M.T @ lam``: (m,) -> (n,)."""
        return lam @ self.data

    def gram(self, v: Array) -> Array:
        """``M diag(v) M.T``: (n,) -> (m, m)."""
        return (self.data * v[None, :]) @ self.data.T

    def tree_flatten(self):
        return (self.data,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)


@jax.tree_util.register_pytree_node_class
class PaddedGram:
    """M stored by household: the row indices and values of each column, padded to ``q`` entries.

    Args:
      idx: int32 row (target) indices, shape (n, q); padding entries point at row 0.
      val: the values, shape (n, q); padding entries are 0.
      m: number of rows (targets) of M.
    """

    layout = "padded"

    def __init__(self, idx: Array, val: Array, m: int):
        self.idx = idx
        self.val = val
        self.m = int(m)
        self.shape = (self.m, int(idx.shape[0]))

    def matvec(self, w: Array) -> Array:
        """``M @ w``: (n,) -> (m,)."""
        return jax.ops.segment_sum((self.val * w[:, None]).reshape(-1), self.idx.reshape(-1), self.m)

    def rmatvec(self, lam: Array) -> Array:
        """``M.T @ lam``: (m,) -> (n,)."""
        return jnp.sum(self.val * lam[self.idx], axis=1)

    def _pairs(self, idx: Array, val: Array, v: Array) -> Array:
        """Upper triangle (a <= b) of ``sum_j v_j val_j val_j'`` over a block of households, as (m, m)."""
        q = idx.shape[1]
        a, b = np.triu_indices(q)
        flat = (idx[:, a] * self.m + idx[:, b]).reshape(-1)
        contrib = (v[:, None] * val[:, a] * val[:, b]).reshape(-1)
        return jax.ops.segment_sum(contrib, flat, self.m * self.m).reshape(self.m, self.m)

    def gram(self, v: Array) -> Array:
        """``M diag(v) M.T``: (n,) -> (m, m), block by block of households."""
        n = self.idx.shape[0]
        block = min(_BLOCK, n)
        full = n // block

        def body(i, acc):
            def take(x):
                return jax.lax.dynamic_slice_in_dim(x, i * block, block)

            return acc + self._pairs(take(self.idx), take(self.val), take(v))

        upper = jax.lax.fori_loop(0, full, body, jnp.zeros((self.m, self.m), self.val.dtype))
        if full * block < n:  # the last, shorter block
            rest = slice(full * block, n)
            upper = upper + self._pairs(self.idx[rest], self.val[rest], v[rest])
        # Pairs with a < b in different rows of M land in one triangle or the other depending on
        # the row order within a household; symmetrise, counting the diagonal once.
        return upper + upper.T - jnp.diag(jnp.diag(upper))

    def tree_flatten(self):
        return (self.idx, self.val), self.m

    @classmethod
    def tree_unflatten(cls, m, children):
        idx, val = children
        return cls(idx, val, m)


def choose_layout(m: int, n: int, max_per_household: int, itemsize: int) -> GramLayout:
    """The layout ``layout="auto"`` picks: the cheaper Gram matrix by the measured cost rule.

    Args:
      m: rows (targets) of M.
      n: columns (households).
      max_per_household: the largest number of nonzeros in one column.
      itemsize: bytes per value (4 or 8).

    Returns:
      ``"dense"`` or ``"padded"``.
    """
    if m * n * itemsize > _DENSE_MAX_BYTES:
        return "padded"
    q = max_per_household
    return "padded" if _PAIR_NS * q * (q + 1) / 2 < _DENSE_NS * m * m else "dense"


def compute_dtype() -> Any:
    """float64 when JAX runs in 64-bit mode (``jax.enable_x64``), else float32."""
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def gram_matrix(
    M: Any, *, layout: GramLayout = "auto", dtype: DTypeLike | None = None, name: str = "M"
) -> DenseGram | PaddedGram:
    """Validates M (targets x households) and stores it for Newton's method.

    Args:
      M: shape (m, n): a scipy sparse matrix or array of any format, a NumPy or a JAX array (or
        nested lists); finite and real.
      layout: ``"auto"``, ``"dense"`` or ``"padded"`` (see the module docstring).
      dtype: float32 or float64; None means float64 when JAX runs in 64-bit mode, else float32.
      name: the argument's name, for error messages.

    Returns:
      A ``DenseGram`` or ``PaddedGram``.

    Raises:
      ValueError: M is not 2-D, is empty, holds NaN/inf or non-real values, or ``layout`` is unknown.
    """
    checks.check_choice("layout", layout, LAYOUTS)
    dt = np.dtype(compute_dtype() if dtype is None else dtype)
    if isinstance(M, (DenseGram, PaddedGram)):
        return M
    if isinstance(M, jax.Array) and not is_sparse(M):
        M = np.asarray(M)
    if not is_sparse(M):
        if isinstance(M, (str, bytes)) or not (hasattr(M, "__array__") or isinstance(M, (list, tuple))):
            raise ValueError(
                f"{name} must be a scipy sparse matrix, a NumPy array or a JAX array, got {type(M).__name__}."
            )
        M = np.asarray(M)
    check_matrix(M, name=name, dtype=dt)
    m, n = M.shape
    if is_sparse(M):
        csc = sp.csc_matrix(M, dtype=np.float64)
        csc.sum_duplicates()
        csc.eliminate_zeros()
    else:
        csc = None
    if layout == "auto":
        counts = np.diff(csc.indptr) if csc is not None else np.count_nonzero(M, axis=0)
        layout = choose_layout(m, n, int(counts.max(initial=0)), dt.itemsize)
    if layout == "dense":
        dense = csc.toarray() if csc is not None else np.asarray(M, np.float64)
        return DenseGram(jnp.asarray(dense, dt))
    if csc is None:
        csc = sp.csc_matrix(np.asarray(M, np.float64))
        csc.eliminate_zeros()
    counts = np.diff(csc.indptr)
    q = max(1, int(counts.max(initial=0)))
    if csc.nnz == n * q:  # every household has q nonzeros (one per categorical margin): a reshape
        idx = csc.indices.astype(np.int32, copy=False).reshape(n, q)
        val = csc.data.astype(dt, copy=False).reshape(n, q)
    else:  # each stored entry goes to its column's row of the layout, at its position in the column
        flat = np.arange(csc.nnz) + np.repeat(np.arange(n) * q - csc.indptr[:-1], counts)
        idx = np.zeros(n * q, np.int32)
        val = np.zeros(n * q, dt)
        idx[flat] = csc.indices
        val[flat] = csc.data
    return PaddedGram(jnp.asarray(idx.reshape(n, q)), jnp.asarray(val.reshape(n, q)), m)
