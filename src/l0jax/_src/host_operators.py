"""The ``"scipy"`` backend's host side: scipy's CSR kernels on the host's threads, behind callbacks.

``operators.ScipyOperator`` is the operator a jitted function receives: a pytree whose only leaf is
an int32 token. This module holds what runs behind that token:

* ``HostMatrices``: the CSR of M and of M.T cut into row blocks of balanced nonzeros (one per
  thread), and the CSC blocks of the products that scatter (see ``_SCATTER_MIN_RATIO``);
* a registry from tokens to ``HostMatrices`` (``register``, ``lookup``, ``find``), weak, so that a
  matrix lives exactly as long as the operator that ``as_operator`` returned for it;
* one thread pool shared by every operator (scipy releases the GIL in its kernels);
* ``scipy_matvec`` and ``scipy_rmatvec``: ``jax.pure_callback`` products whose ``custom_vjp`` makes
  each product's transpose the other product, and ``scipy_chunk_products``, the products of several
  operators in one callback (a sharded operator's chunks).
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import scipy.sparse as sp

Array = jax.Array

# Below this many stored entries a host product is too short to be worth splitting over threads.
_MIN_NONZEROS_PER_THREAD = 200_000
# A host product whose output is this many times shorter than its input scatters into the output
# instead of gathering from the input: a row of the CSR form (say one of 500 targets) gathers from
# all over a long input vector (200,000 households), missing the cache on most entries, while the
# CSC form (the other orientation's row blocks, transposed) reads the input in order and adds into
# an output that stays in cache. Measured on a 2-core AMD EPYC with scipy 1.17, two threads:
# 500 x 200,000 at 5M entries 9 ms gather against 4.4 ms scatter; 2,000 x 20,000 (ratio 10) equal.
# A fixed rule, not a timing, so the summation order (hence every result) is the same in every run.
_SCATTER_MIN_RATIO = 16
# Blocks of a scatter product (fewer for small matrices, see ``_row_blocks``), whatever the threads.
_SCATTER_BLOCKS = 8


class HostMatrices:
    """CSR of M and of M.T in row blocks of balanced nonzeros, one block per thread, and the CSC
    blocks of the products that scatter (see ``_SCATTER_MIN_RATIO``).

    Given only one orientation (``csr`` of M or ``transposed``, the CSR of M.T, i.e. M's CSC
    arrays), the other is built only when a product needs it: a wide matrix (M @ w scatters)
    never reads the CSR of M, a tall one never the CSR of M.T, so a column block of a large M
    costs one copy of its entries, not two. ``forward``/``transpose`` are None when not kept.
    """

    def __init__(self, csr: sp.csr_matrix | None, threads: int, transposed: sp.csr_matrix | None = None):
        if csr is not None:
            m, n = csr.shape
            self.nnz = int(csr.nnz)
        else:
            assert transposed is not None, "the CSR of M or of M.T is needed"
            n, m = transposed.shape
            self.nnz = int(transposed.nnz)
        self.shape = (int(m), int(n))
        self.threads = threads
        wide, tall = m * _SCATTER_MIN_RATIO <= n, n * _SCATTER_MIN_RATIO <= m
        if transposed is None and not tall:
            assert csr is not None
            transposed = csr.T.tocsr()
        if csr is None and not wide:
            assert transposed is not None
            csr = transposed.T.tocsr()
        # An orientation is missing only where no gather needs it (csr of a wide M, M.T's of a tall one).
        self.forward = None if csr is None else _row_blocks(csr, threads)
        self.transpose = None if transposed is None else _row_blocks(transposed, threads)
        # A scatter sums one partial output per block, so its blocks follow a fixed rule rather than
        # the thread count: the same matrix gives bitwise the same products on any machine. The CSC
        # views are built once: scipy's .T checks the index arrays (a pass as long as the product).
        self._scatter: dict[bool, tuple[list[sp.csc_matrix], np.ndarray]] = {}
        for transpose, source in ((False, transposed), (True, csr)):
            out_size, in_size = (n, m) if transpose else (m, n)
            if out_size * _SCATTER_MIN_RATIO <= in_size:
                assert source is not None  # kept: no matrix is both wide and tall
                self._scatter[transpose] = _csc_blocks(_row_blocks(source, _SCATTER_BLOCKS))

    def product(self, transpose: bool, x: np.ndarray) -> np.ndarray:
        """``M.T @ x`` if ``transpose`` else ``M @ x``, for ``x`` of shape (k,) or (k, batch)."""
        if transpose in self._scatter:
            blocks, starts = self._scatter[transpose]
            return _scatter_blocks(blocks, starts, x, self.threads)
        gather = self.transpose if transpose else self.forward
        assert gather is not None  # kept: only an orientation that scatters may be missing
        return _gather_blocks(gather, x)


def row_block(csr: sp.csr_matrix, lo: int, hi: int) -> sp.csr_matrix:
    """Rows ``lo:hi`` of a CSR matrix as a matrix whose data and indices are views of ``csr``'s.

    (Slicing, or building a matrix from slices, copies: scipy copies any view smaller than half of
    its base array. The arrays are set after construction to keep the views.)
    """
    start, stop = int(csr.indptr[lo]), int(csr.indptr[hi])
    blk = sp.csr_matrix((hi - lo, csr.shape[1]), dtype=csr.dtype)
    blk.indptr = (csr.indptr[lo : hi + 1] - start).astype(csr.indptr.dtype)
    blk.indices = csr.indices[start:stop]
    blk.data = csr.data[start:stop]
    return blk


def _row_blocks(csr: sp.csr_matrix, threads: int) -> list[sp.csr_matrix]:
    """Splits a CSR matrix into row blocks of about equal nonzeros; views, not copies, of its arrays."""
    k = max(1, min(threads, csr.nnz // _MIN_NONZEROS_PER_THREAD, csr.shape[0]))
    if k == 1:
        return [csr]
    cuts = np.searchsorted(csr.indptr, np.linspace(0, csr.nnz, k + 1)[1:-1]).tolist()
    bounds = [0, *sorted({c for c in cuts if 0 < c < csr.shape[0]}), csr.shape[0]]
    return [row_block(csr, lo, hi) for lo, hi in itertools.pairwise(bounds)]


_REGISTRY: weakref.WeakValueDictionary[int, HostMatrices] = weakref.WeakValueDictionary()
_TOKENS = itertools.count(1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="l0jax-csr")
        return _POOL


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def lookup(token: Any) -> HostMatrices:
    tok = int(np.asarray(token).reshape(-1)[0])
    host = _REGISTRY.get(tok)
    if host is None:
        raise RuntimeError(
            "the matrix behind this scipy operator no longer exists (its operator was garbage "
            "collected); keep a reference to the operator returned by as_operator while using it."
        )
    return host


def register(host: HostMatrices) -> int:
    """Enters ``host`` in the registry under a new token; the entry lasts while something else holds ``host``."""
    token = next(_TOKENS)
    _REGISTRY[token] = host
    return token


def find(token: int) -> HostMatrices | None:
    """The matrices registered under ``token``, or None when they were garbage collected."""
    return _REGISTRY.get(token)


def _gather_blocks(blocks: list[sp.csr_matrix], x: np.ndarray) -> np.ndarray:
    """``[B1; B2; ...] @ x``: each thread computes the output rows of its block."""
    if len(blocks) == 1:
        return blocks[0] @ x
    return np.concatenate(list(_pool(len(blocks)).map(lambda b: b @ x, blocks)), axis=0)


def _csc_blocks(blocks: list[sp.csr_matrix]) -> tuple[list[sp.csc_matrix], np.ndarray]:
    """The transposes (CSC views) of row blocks, and each block's first row."""
    return [_csc_view(b) for b in blocks], np.cumsum([0] + [b.shape[0] for b in blocks])


def _csc_view(csr: sp.csr_matrix) -> sp.csc_matrix:
    """``csr.T`` sharing ``csr``'s arrays (``.T`` copies arrays that are small views; see ``row_block``)."""
    blk = sp.csc_matrix((csr.shape[1], csr.shape[0]), dtype=csr.dtype)
    blk.indptr, blk.indices, blk.data = csr.indptr, csr.indices, csr.data
    return blk


def _scatter_blocks(
    blocks: list[sp.csc_matrix], starts: np.ndarray, x: np.ndarray, threads: int
) -> np.ndarray:
    """``[B1, B2, ...] @ x`` for CSC blocks of columns: each block's share (a scatter) on one of
    ``threads`` threads, the shares summed in block order.
    """
    if len(blocks) == 1:
        return blocks[0] @ x
    share = lambda i: blocks[i] @ x[starts[i] : starts[i + 1]]  # noqa: E731
    parts = (
        list(_pool(threads).map(share, range(len(blocks))))
        if threads > 1
        else [share(i) for i in range(len(blocks))]
    )
    return functools.reduce(np.add, parts)


def _host_product(transpose: bool, token: Any, x: Any) -> np.ndarray:
    host = lookup(token)
    x = np.asarray(x)
    batch = x.shape[:-1]
    if batch:
        # One product with a (k, batch) matrix serves a whole vmap batch at once.
        x = np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)
    y = np.asarray(host.product(transpose, x), dtype=x.dtype)
    if batch:
        y = y.T.reshape(*batch, -1)
    return y


def _host_chunks(transpose: bool, tokens: Any, x: Any) -> np.ndarray:
    x = np.asarray(x)
    tokens = np.asarray(tokens).reshape(-1)
    parts = [lookup(t).product(transpose, x if x.ndim == 1 else x[i]) for i, t in enumerate(tokens)]
    return np.stack(parts).astype(x.dtype, copy=False)


def scipy_chunk_products(tokens: Array, x: Array, out_size: int, transpose: bool) -> Array:
    """The products of several ``"scipy"`` operators (their tokens, shape (k,)) in one host callback.

    Operator ``i`` multiplies ``x[i]`` (``x`` of shape (k, in)) or, for a 1-D ``x``, the same ``x``;
    the result has shape (k, out_size). Not differentiable: a sharded operator's chunks use it
    inside its own ``custom_vjp``.
    """
    out = jax.ShapeDtypeStruct((tokens.shape[0], out_size), x.dtype)
    return jax.pure_callback(functools.partial(_host_chunks, transpose), out, tokens, x)


def _callback(transpose: bool, token: Array, x: Array, out_size: int) -> Array:
    out = jax.ShapeDtypeStruct(x.shape[:-1] + (out_size,), x.dtype)
    fn = (lambda t, v: _host_product(True, t, v)) if transpose else (lambda t, v: _host_product(False, t, v))
    # expand_dims: a vmapped call reaches the host once with the whole batch of vectors.
    return jax.pure_callback(fn, out, token, x, vmap_method="expand_dims")


# The shape rides along as a static (nondiff) argument; the token gets no cotangent (None).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def scipy_matvec(token: Array, w: Array, shape: tuple[int, int]) -> Array:
    """``M @ w`` for the matrices registered under ``token`` (M of ``shape``); its gradient is ``M.T @ g``."""
    return _callback(False, token, w, shape[0])


def _matvec_fwd(token, w, shape):
    return _callback(False, token, w, shape[0]), token


def _matvec_bwd(shape, token, g):
    return None, _callback(True, token, g, shape[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def scipy_rmatvec(token: Array, r: Array, shape: tuple[int, int]) -> Array:
    """``M.T @ r`` for the matrices registered under ``token`` (M of ``shape``); its gradient is ``M @ g``."""
    return _callback(True, token, r, shape[1])


def _rmatvec_fwd(token, r, shape):
    return _callback(True, token, r, shape[1]), token


def _rmatvec_bwd(shape, token, g):
    return None, _callback(False, token, g, shape[0])


scipy_matvec.defvjp(_matvec_fwd, _matvec_bwd)
scipy_rmatvec.defvjp(_rmatvec_fwd, _rmatvec_bwd)
