"""A matrix given by column blocks: M = [B_0 | B_1 | ...], households split into consecutive ranges.

A production matrix (millions of household columns) need never exist whole on one host: a sharded
calibration (``devices=``) gives each device a contiguous range of households and builds that
range from the blocks overlapping it. ``ColumnBlocks`` holds either the blocks themselves (a
sequence of scipy sparse or NumPy matrices) or a function that builds block ``i`` on demand
(``ColumnBlocks(build, widths)``), so that in a multi-process run each process builds only the
blocks its devices need. ``ColumnBlocks.from_npz_folder`` reads a folder of ``scipy.sparse.save_npz``
files, one block per file, learning the widths from the files' headers without loading them.

``column_range(M, lo, hi, ...)`` is what the sharded engine calls: columns ``lo:hi`` of ``M`` (a
whole matrix or ``ColumnBlocks``) as the canonical CSR of their transpose (the columns' CSC arrays),
padded with empty columns past the last household.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import scipy.sparse as sp
from jax.typing import DTypeLike

from l0jax._src import checks
from l0jax._src import operators as ops
from l0jax._src.operators import MatrixLike


class ColumnBlocks:
    """The matrix M (targets x households) as consecutive column blocks, loaded block by block.

    Example:
      >>> import numpy as np, scipy.sparse as sp, l0jax
      >>> M = sp.random(40, 1000, density=0.05, format="csc", random_state=0)
      >>> y = M @ np.ones(1000)
      >>> blocks = l0jax.ColumnBlocks([M[:, :500], M[:, 500:]])             # the blocks themselves
      >>> blocks.shape
      (40, 1000)
      >>> built = l0jax.ColumnBlocks(lambda i: M[:, 500 * i:500 * (i + 1)], widths=[500, 500])  # on demand
      >>> fit = l0jax.calibrate(blocks, y, key=0, epochs=50)
      >>> fit.weights.shape
      (1000,)

      A folder of ``block_000.npz``, ``block_001.npz``, ... (scipy's ``save_npz``) is read with
      ``ColumnBlocks.from_npz_folder("blocks/")``; add ``devices=4`` to split the households over
      four devices.

    Args:
      blocks: a sequence of matrices of shape (m, n_i) (scipy sparse or NumPy), or a callable
        ``blocks(i)`` returning block ``i`` (it may be called more than once per block, and only
        for the blocks a process needs).
      widths: the number of columns of each block: required with a callable, checked against the
        matrices when they are given.

    Raises:
      ValueError: no blocks, widths missing or not positive integers, widths that disagree with
        the matrices, or blocks whose row counts differ (each must have one row per target).
    """

    def __init__(self, blocks: Sequence[Any] | Callable[[int], Any], widths: Sequence[int] | None = None):
        if callable(blocks):
            if widths is None:
                raise ValueError(
                    "M: ColumnBlocks(build, widths) needs the widths (columns of each block) when the "
                    "blocks are built by a function."
                )
            self._build, self._matrices = blocks, None
        else:
            if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
                raise TypeError(
                    f"M: ColumnBlocks takes a sequence of matrices or a function building block i, "
                    f"got {type(blocks).__name__}."
                )
            matrices = list(blocks)
            for i, b in enumerate(matrices):
                if len(getattr(b, "shape", ())) != 2:
                    raise ValueError(
                        f"M: column block {i} must be a 2-D matrix, got {type(b).__name__} of shape "
                        f"{getattr(b, 'shape', None)}."
                    )
            rows = {int(b.shape[0]) for b in matrices}
            if len(rows) > 1:
                counts = ", ".join(f"block {i}: {b.shape[0]}" for i, b in enumerate(matrices[:6]))
                raise ValueError(
                    f"M: the column blocks have different numbers of rows ({counts}); every block must "
                    f"have one row per target."
                )
            found = [int(b.shape[1]) for b in matrices]
            if widths is not None and [int(w) for w in widths] != found:
                raise ValueError(f"M: widths {list(widths)} do not match the blocks' column counts {found}.")
            widths = found
            self._build, self._matrices = matrices.__getitem__, matrices
        widths = [checks.check_int_at_least(f"widths[{i}]", w, 1) for i, w in enumerate(widths)]
        if not widths:
            raise ValueError("M: ColumnBlocks needs at least one block.")
        self.widths = tuple(widths)
        self.offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self._rows = int(self._matrices[0].shape[0]) if self._matrices else None

    @classmethod
    def from_npz_folder(cls, folder: str | Path) -> ColumnBlocks:
        """The blocks of a folder of ``scipy.sparse.save_npz`` files, in sorted file-name order.

        Only each file's ``shape`` entry is read here; a block is loaded when it is needed.

        Args:
          folder: a folder holding ``*.npz`` files, one column block each, named so that sorting
            the names gives the column order (``block_000.npz``, ``block_001.npz``, ...).

        Raises:
          ValueError: not a folder, no ``.npz`` file, or a file that is not a scipy sparse matrix.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder of .npz column blocks.")
        files = sorted(folder.glob("*.npz"))
        if not files:
            raise ValueError(
                f"{folder} holds no .npz files (expected one scipy.sparse.save_npz file per column block)."
            )
        shapes = [_npz_shape(f) for f in files]
        rows = {s[0] for s in shapes}
        if len(rows) > 1:
            counts = ", ".join(f"{f.name}: {s[0]}" for f, s in zip(files[:6], shapes, strict=False))
            raise ValueError(
                f"{folder}: the column blocks have different numbers of rows ({counts}); every block "
                f"must have one row per target."
            )
        blocks = cls(lambda i: _load_npz(files[i]), widths=[s[1] for s in shapes])
        blocks._rows = shapes[0][0]
        return blocks

    @property
    def n(self) -> int:
        """Number of columns (households) of all blocks together."""
        return int(self.offsets[-1])

    @property
    def in_memory(self) -> bool:
        """Whether the blocks are matrices held here (not built on demand)."""
        return self._matrices is not None

    @property
    def rows(self) -> int | None:
        """Number of rows (targets), when known without building a block (else None)."""
        return self._rows

    @property
    def shape(self) -> tuple[int | None, int]:
        """``(m, n)``; ``m`` is None for blocks built on demand until one was built."""
        return (self._rows, self.n)

    def __len__(self) -> int:
        return len(self.widths)

    def block(self, i: int) -> Any:
        """Block ``i`` (built if needed), checked for its shape.

        Raises:
          ValueError: a block of the wrong width, or with another row count than the blocks before.
        """
        b = self._build(i)
        shape = getattr(b, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(f"M: column block {i} must be a 2-D matrix, got {type(b).__name__}.")
        if int(shape[1]) != self.widths[i]:
            raise ValueError(
                f"M: column block {i} has {shape[1]} columns but widths[{i}] is {self.widths[i]}."
            )
        if self._rows is None:
            self._rows = int(shape[0])
        elif int(shape[0]) != self._rows:
            raise ValueError(
                f"M: column block {i} has {shape[0]} rows, the blocks before it {self._rows}; the column "
                f"blocks have different numbers of rows, and every block must have one row per target."
            )
        return b

    def overlapping(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """The blocks meeting columns ``lo:hi``: ``(block, first column in it, end column in it)``."""
        out = []
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        for i in range(max(first, 0), len(self.widths)):
            start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
            if start >= hi:
                break
            if stop > lo:
                out.append((i, max(lo, start) - start, min(hi, stop) - start))
        return out

    def __repr__(self) -> str:
        return f"ColumnBlocks({len(self)} blocks, {self.n:,} columns)"


CalibrationMatrix = MatrixLike | ColumnBlocks | Sequence[MatrixLike]
"""The matrix M of calibration: one matrix (``MatrixLike``), or its column blocks (``ColumnBlocks``, or a
list of matrices, one per block of consecutive households)."""


def _npz_shape(path: Path) -> tuple[int, int]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "shape" not in z.files or "format" not in z.files:
                raise ValueError("not a scipy sparse matrix")
            shape = tuple(int(d) for d in z["shape"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read it as a scipy.sparse.save_npz column block ({err}).") from err
    if len(shape) != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got shape {shape}.")
    return shape


def _load_npz(path: Path) -> sp.spmatrix | sp.sparray:
    try:
        # scipy-stubs types the result as the private base class of the formats.
        return sp.load_npz(path)  # pyright: ignore[reportReturnType]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read it as a scipy.sparse.save_npz column block ({err}).") from err


def is_column_input(M: Any) -> bool:
    """Whether ``M`` is given by column blocks (``ColumnBlocks`` or a list/tuple of 2-D matrices)."""
    if isinstance(M, ColumnBlocks):
        return True
    return (
        isinstance(M, (list, tuple))
        and len(M) > 0
        and all(ops.is_sparse(b) or (hasattr(b, "shape") and len(b.shape) == 2) for b in M)
    )


def as_column_blocks(M: Any) -> ColumnBlocks:
    """``M`` as ``ColumnBlocks`` (a list or tuple of matrices becomes one)."""
    return M if isinstance(M, ColumnBlocks) else ColumnBlocks(list(M))


def shape_of(M: Any) -> tuple[int | None, int]:
    """``(m, n)`` of a whole matrix or of column blocks (``m`` None while unknown)."""
    if is_column_input(M):
        return as_column_blocks(M).shape
    shape = getattr(M, "shape", None)
    if shape is None:
        shape = np.shape(M)
    return tuple(int(d) for d in shape)  # type: ignore[return-value]


def _columns(name: str, M: Any, lo: int, hi: int) -> sp.csc_matrix:
    """Columns ``lo:hi`` of a whole matrix (scipy sparse, NumPy or JAX) as CSC, without a dense copy of M."""
    if ops.is_sparse(M):
        src = M if M.format in ("csr", "csc") else M.tocsc()
        return sp.csc_matrix(src[:, lo:hi])
    if isinstance(M, jax.Array):
        M = np.asarray(M)
    arr = np.asarray(M)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold real numbers, got dtype {arr.dtype}; convert it with .astype(float)."
        )
    return sp.csc_matrix(arr[:, lo:hi])


def column_range(
    M: Any, lo: int, hi: int, *, m: int, dtype: DTypeLike = np.float32, name: str = "M"
) -> sp.csr_matrix:
    """Columns ``lo:hi`` of ``M`` as the canonical CSR of their transpose, shape (hi - lo, m).

    Columns at and past ``M``'s last are empty (padding households of a sharded run). The values
    are checked (finite, real, in range) as ``as_operator`` checks a whole matrix.

    Args:
      M: a whole matrix (scipy sparse, NumPy, JAX) or ``ColumnBlocks`` (only the blocks meeting
        ``lo:hi`` are built).
      lo: first column.
      hi: end column (may exceed the number of columns).
      m: the number of rows every block must have (the number of targets).
      dtype: float32 or float64.
      name: the argument's name for errors.

    Returns:
      The CSR of the columns' transpose (rows = households ``lo..hi-1``), canonical: int32 sorted
      indices, no duplicates, values of ``dtype``.
    """
    if is_column_input(M):
        blocks = as_column_blocks(M)
        n = blocks.n
        parts = []
        for i, a, b in blocks.overlapping(lo, min(hi, n)):
            block = blocks.block(i)
            if int(block.shape[0]) != m:
                raise ValueError(
                    f"{name}: column block {i} has {block.shape[0]} rows but there are {m} targets; "
                    f"the column blocks must have one row per target."
                )
            parts.append(_columns(name, block, a, b))
        cols = (
            sp.hstack(parts, format="csc")
            if len(parts) > 1
            else (parts[0] if parts else sp.csc_matrix((m, 0)))
        )
    else:
        n = shape_of(M)[1]
        cols = _columns(name, M, lo, min(hi, n)) if lo < n else sp.csc_matrix((m, 0))
    width = hi - lo
    if cols.shape[1] < width:  # padding: empty columns past the last household
        indptr = np.concatenate(
            [cols.indptr, np.full(width - cols.shape[1], cols.indptr[-1], cols.indptr.dtype)]
        )
        cols = sp.csc_matrix((cols.data, cols.indices, indptr), shape=(cols.shape[0], width))
    return ops.canonical_csr(name, cols.T, np.dtype(dtype))
