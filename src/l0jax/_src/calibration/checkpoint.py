"""Checkpoints of long calibrations: the full training state, written atomically, checked on load.

A checkpoint is one ``.npz`` file (NumPy's zip of arrays, read without pickle) holding every leaf of
the ``CalibrationState`` (parameters, optimizer state with its moments, learning rate and
temperature, the PRNG key's raw data, the step count, the hyperparameters, the keep-K
controller's state) and a JSON header with:

* a fingerprint of the matrix M and the targets y (``fingerprint``): resuming with other data is
  an error, never a silent mix;
* the run's settings (learning rate, lambdas, ...): a changed value is a warning on resume;
* the history of the chunks done so far, so a resumed run returns the whole history;
* a checksum of the arrays: a truncated or altered file is reported as corrupt.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the
checkpoint (``os.replace`` is atomic), so a crash while writing leaves the previous checkpoint
intact. A run that resumes continues bitwise as if it had never stopped: each epoch depends only on
the state, and the state is restored exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.typing import ArrayLike

from l0jax._src.calibration.blocks import as_column_blocks, is_column_input
from l0jax._src.calibration.model import CalibrationState
from l0jax._src.operators import MatrixOperator, is_sparse

FORMAT = "l0jax-calibration-checkpoint"
VERSION = 2  # 2: fingerprints hash the set of entries (layout-independent)
_HEADER = "__header__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or made for another problem or setup."""


# --------------------------------------------------------------------------------------------
# Fingerprint of the problem
# --------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection of uint64 with full avalanche (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4EB9B)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def entry_lanes(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Two 64-bit sums of hashes of the nonzero entries ``(row, col, float32 value)`` of a matrix part.

    Addition modulo 2**64 is commutative, so the lanes of a matrix are the sum of the lanes of any
    split of its entries: column blocks of any width, on any number of processes, give the same
    fingerprint as the whole matrix.

    Args:
      rows: row (target) index of each entry.
      cols: global column (household) index of each entry.
      values: the entries (cast to float32; zeros are skipped).
      n: the number of columns of the whole matrix.

    Returns:
      uint64 array of shape (2,).
    """
    lanes = np.zeros(2, np.uint64)
    step = 4_000_000
    with np.errstate(over="ignore"):
        for lo in range(0, len(values), step):
            v = np.asarray(values[lo : lo + step], np.float32)
            keep = v != 0
            bits = v[keep].view(np.uint32).astype(np.uint64)
            where = (
                np.asarray(rows[lo : lo + step], np.uint64)[keep] * np.uint64(n)
                + np.asarray(cols[lo : lo + step], np.uint64)[keep]
            )
            a = _mix64(where ^ np.uint64(0x9E3779B97F4A7C15))
            b = _mix64(a ^ (bits * np.uint64(0xC2B2AE3D27D4EB4F)))
            lanes[0] += np.sum(b, dtype=np.uint64)
            lanes[1] += np.sum(_mix64(b ^ np.uint64(0x165667B19E3779F9)), dtype=np.uint64)
    return lanes


def csr_lanes(csr: sp.csr_matrix, n: int, *, offset: int = 0, transposed: bool = False) -> np.ndarray:
    """``entry_lanes`` of a canonical CSR part of M, by row batches (bounded temporaries).

    Args:
      csr: the part: rows of M (``transposed=False``), or the CSR of columns ``offset...`` of M's
        transpose (``transposed=True``: its rows are households, its column indices targets).
      n: the number of columns of the whole M.
      offset: the global index of the part's first row (of M, or of M.T).
      transposed: which orientation ``csr`` is.
    """
    lanes = np.zeros(2, np.uint64)
    step = max(1, int(csr.shape[0] * 4_000_000 / max(csr.nnz, 1)))
    with np.errstate(over="ignore"):
        for lo in range(0, csr.shape[0], step):
            hi = min(csr.shape[0], lo + step)
            a, b = int(csr.indptr[lo]), int(csr.indptr[hi])
            own = np.repeat(
                np.arange(lo + offset, hi + offset, dtype=np.int64), np.diff(csr.indptr[lo : hi + 1])
            )
            other = csr.indices[a:b]
            rows, cols = (other, own) if transposed else (own, other)
            lanes += entry_lanes(rows, cols, csr.data[a:b], n)
    return lanes


def fingerprint_of(shape: tuple[int, int], lanes: np.ndarray, targets: ArrayLike) -> str:
    """The fingerprint from the matrix's shape, its ``entry_lanes`` (summed over its parts) and the targets."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"entries {shape[0]} {shape[1]}".encode())
    h.update(np.asarray(lanes, np.uint64).tobytes())
    h.update(b"targets")
    h.update(np.ascontiguousarray(np.asarray(targets, np.float64)).tobytes())
    return h.hexdigest()


def fingerprint(M: Any, targets: ArrayLike) -> str:
    """A hash of the matrix and the targets (BLAKE2b, hex), the same for any storage of the same values.

    The matrix is hashed as the set of its nonzero entries (row, column, value as float32, the
    precision the fit uses; duplicates summed), so a dense array, a scipy matrix, and column blocks
    of it split over any number of devices or processes (``ShardedOperator.fingerprint``) agree.
    An operator from ``as_operator`` (whose arrays may live on a device) is fingerprinted by its
    products with two fixed probe vectors.

    Args:
      M: the matrix, shape (m, n): scipy sparse, NumPy, JAX, or a ``MatrixOperator``.
      targets: the targets, shape (m,).

    Returns:
      A 32-character hexadecimal string.
    """
    if isinstance(M, MatrixOperator):
        h = hashlib.blake2b(digest_size=16)
        m, n = M.shape
        h.update(f"operator {m} {n}".encode())
        probes = np.random.default_rng(20240531).uniform(0.5, 1.5, (2, n)).astype(np.float32)
        for p in probes:
            h.update(np.asarray(M.matvec(jnp.asarray(p)), np.float32).tobytes())
        h.update(b"targets")
        h.update(np.ascontiguousarray(np.asarray(targets, np.float64)).tobytes())
        return h.hexdigest()
    if is_column_input(M):  # one block at a time; the same lanes as the whole matrix
        blocks = as_column_blocks(M)
        lanes = np.zeros(2, np.uint64)
        with np.errstate(over="ignore"):
            for i in range(len(blocks)):
                b = blocks.block(i)
                part = (b if is_sparse(b) else sp.csr_matrix(np.asarray(b))).tocsc()
                part.sum_duplicates()
                rows, cols = part.shape
                lanes += csr_lanes(
                    sp.csr_matrix((part.data, part.indices, part.indptr), shape=(cols, rows)),
                    blocks.n,
                    offset=int(blocks.offsets[i]),
                    transposed=True,
                )
        m = blocks.rows
        assert m is not None  # known once a block was built
        return fingerprint_of((m, blocks.n), lanes, targets)
    csr = (M if is_sparse(M) else sp.csr_matrix(np.asarray(M))).tocsr()
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return fingerprint_of(csr.shape, csr_lanes(csr, csr.shape[1]), targets)


# --------------------------------------------------------------------------------------------
# State <-> arrays
# --------------------------------------------------------------------------------------------


def _plain_state(state: CalibrationState) -> tuple[CalibrationState, str]:
    """The state with its typed PRNG key replaced by the key's raw data, and the key's implementation."""
    key = state.key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        return state._replace(key=jax.random.key_data(key)), impl
    return state, "raw"


def _checksum(arrays: list[np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    state: CalibrationState,
    *,
    fingerprint: str,
    settings: dict[str, Any],
    history: dict[str, list[float]],
) -> None:
    """Writes ``state`` to ``path`` atomically (temporary file, flush, fsync, rename).

    Args:
      path: the checkpoint file (conventionally ``*.npz``); its folder must exist.
      state: the ``CalibrationState`` to save.
      fingerprint: ``fingerprint(M, y)`` of the problem.
      settings: the run's settings (JSON-serialisable), compared on resume.
      history: per-chunk metrics so far, ``{key: list of values}``.
    """
    path = Path(path)
    plain, impl = _plain_state(state)
    leaves, treedef = jax.tree_util.tree_flatten(plain)
    arrays = [np.asarray(jax.device_get(leaf)) for leaf in leaves]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint,
        "treedef": str(treedef),
        "key_impl": impl,
        "step": int(state.step),
        "settings": settings,
        "history": history,
        "checksum": _checksum(arrays),
        "leaves": len(arrays),
    }
    # (Any: numpy's stubs would match a dict of arrays to savez's allow_pickle keyword.)
    payload: dict[str, Any] = {f"leaf_{i:05d}": a for i, a in enumerate(arrays)}
    payload[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable (POSIX); harmless where directories cannot be opened
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a checkpoint (fingerprint, settings, step, history), checked for format.

    Raises:
      CheckpointError: the file is missing, unreadable, truncated, or not an l0jax checkpoint.
    """
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z[_HEADER]).decode())
            count = int(header["leaves"])
            arrays = [z[f"leaf_{i:05d}"] for i in range(count)]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
        TypeError,
    ) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an l0jax checkpoint ({type(err).__name__}: {err}); it was "
            f"left untouched: delete it to start over, or resume from a copy."
        ) from err
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} is not an l0jax calibration checkpoint of version {VERSION} "
            f"(format {header.get('format')!r}, version {header.get('version')!r})."
        )
    if _checksum(arrays) != header.get("checksum"):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its arrays do not match their checksum; it was left "
            f"untouched: delete it to start over, or resume from a copy."
        )
    return header, arrays


def load_checkpoint(
    path: str | os.PathLike, template: CalibrationState, *, fingerprint: str | None = None
) -> tuple[CalibrationState, dict[str, Any]]:
    """Reads a checkpoint into the structure of ``template`` (a fresh state of the same setup).

    Args:
      path: the checkpoint file.
      template: a state built for the run being resumed: same households, gates and optimizer.
      fingerprint: if given, the checkpoint must have been made for this matrix and these targets.

    Returns:
      ``(state, header)``.

    Raises:
      CheckpointError: unreadable or corrupt file, another matrix or targets, or another setup
        (number of households, use_gates, optimizer).
    """
    path = Path(path)
    header, arrays = _read(path)
    if fingerprint is not None and header["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was made for another matrix M or other targets (fingerprint "
            f"{header['fingerprint']} != {fingerprint}); resume with the same data, or start a new run "
            f"with another checkpoint path."
        )
    plain, impl = _plain_state(template)
    leaves, treedef = jax.tree_util.tree_flatten(plain)
    if str(treedef) != header["treedef"] or len(leaves) != len(arrays) or impl != header["key_impl"]:
        raise CheckpointError(
            f"checkpoint {path} holds the state of another setup (optimizer, use_gates or PRNG key type differ); "
            f"resume with the settings it was made with."
        )
    for i, (leaf, arr) in enumerate(zip(leaves, arrays, strict=True)):
        if tuple(np.shape(leaf)) != arr.shape or np.asarray(leaf).dtype != arr.dtype:
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: array {i} has shape {arr.shape} and dtype {arr.dtype}, "
                f"this run needs {tuple(np.shape(leaf))} and {np.asarray(leaf).dtype} (another number of households?)."
            )
    restored = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in arrays])
    if impl != "raw":
        restored = restored._replace(key=jax.random.wrap_key_data(restored.key, impl=impl))
    return restored, header
