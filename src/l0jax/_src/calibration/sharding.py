"""Households sharded over a 1-D device mesh: the layout, the sharded matrix, and host transfers.

A sharded calibration (``calibrate(..., devices=...)``) splits the households (columns of M and
every per-household array: log weights, gate logits, optimizer moments, the padding mask) into
contiguous blocks, one per device of a 1-D ``jax.sharding.Mesh``. Only the matrix products need
to know about it, so only they are written per device:

* ``ShardedOperator.matvec(w)``: each device computes its block's partial target sums, one per
  chunk of households; one collective (an all-gather of the chunk sums, which every device then
  adds in chunk order) gives every device the same predictions, so the loss and metrics are
  computed on a replicated target vector. A ``psum`` would add the same numbers in an order that
  depends on the device count; this way 2, 4 and 8 devices give bitwise the same sums (one
  device differs in the last bits: XLA fuses an unpartitioned program differently);
* ``ShardedOperator.rmatvec(r)``: ``M_i.T @ r`` on each device, from the replicated ``r``: the
  backward pass stays local (a ``custom_vjp`` ties the two products together, as for the host
  operator).

Everything else in the engine is ordinary array code on global arrays that carry a
``NamedSharding``; XLA partitions it (elementwise work stays on each device's block, sums over
households become a local sum and an all-reduce). So any optax optimizer, the keep-K controller
and the extra penalty terms compute the same quantities as on one device. The gate noise of
household ``j`` at epoch ``t`` is ``gate_noise(key, n, t)[j]``, a hash of ``(key, j, t)``
(``model.gate_noise``): the global index, never a device's, so every device count draws the same
gates.

Padding: ``n`` households are cut into ``lcm(8, D)`` chunks of ``ceil(n / chunks)`` on ``D``
devices (whole chunks each); the last chunks are padded with empty columns of M, and ``Problem.mask``
marks the padding households, whose gates are held shut and which are left out of every sum (counts,
penalties). The state a caller sees (``result.state``, checkpoints, ``NonFiniteLossError.state``) is
unpadded and on the default device, so it does not depend on the layout: a run on 4 devices continues
on 2, on 1, or unsharded.

Multi-process: after ``jax.distributed.initialize`` the mesh may hold devices of every process;
each process builds only its own devices' blocks (``blocks.column_range``), and values that go to
the host are gathered with ``multihost_utils.process_allgather``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike, DTypeLike

from l0jax._src.calibration import blocks as colblocks
from l0jax._src.calibration import checkpoint as ckpt
from l0jax._src.host_operators import scipy_chunk_products
from l0jax._src.operators import (
    Backend,
    DenseOperator,
    EllOperator,
    MatrixOperator,
    ScipyOperator,
    SparseOperator,
    choose_backend,
    ell_chunks,
    ell_costs,
    ell_parts,
    ell_width,
    sparse_parts,
)

Array = jax.Array
DevicesLike = int | Sequence[jax.Device] | Mesh | None
"""The devices to split households over: none (one device), the first N, a list, or a 1-D mesh."""
AXIS = "households"
# The households are cut into lcm(CHUNKS, devices) chunks of equal size; the target sums of each
# chunk are computed alone and added in chunk order, so 1, 2, 4 and 8 devices add the same numbers
# in the same order (see ShardedOperator).
CHUNKS = 8


# --------------------------------------------------------------------------------------------
# Devices and layout
# --------------------------------------------------------------------------------------------


# A pytree that place/unplace return with the same structure (a state, a term).
_Tree = TypeVar("_Tree")


@dataclasses.dataclass(frozen=True)
class Layout:
    """``n`` households in contiguous blocks of ``block`` over the devices of a 1-D mesh.

    Attributes:
      mesh: the 1-D mesh; its axis names the household axis.
      n: the number of (real) households.
    """

    mesh: Mesh
    n: int

    @property
    def axis(self) -> str:
        """The mesh's axis name."""
        return self.mesh.axis_names[0]

    @property
    def size(self) -> int:
        """Number of devices."""
        return int(self.mesh.devices.size)

    @property
    def chunks(self) -> int:
        """Number of household chunks: ``lcm(CHUNKS, size)``, the same (8) for 1, 2, 4 and 8 devices."""
        return math.lcm(CHUNKS, self.size)

    @property
    def chunk(self) -> int:
        """Households per chunk, ``ceil(n / chunks)``."""
        return -(-self.n // self.chunks)

    @property
    def block(self) -> int:
        """Households per device: ``chunks / size`` whole chunks."""
        return self.chunk * (self.chunks // self.size)

    @property
    def padded(self) -> int:
        """Households including the padding, ``chunk * chunks`` (``block * size``)."""
        return self.chunk * self.chunks

    @property
    def platform(self) -> str:
        """The devices' platform (``"cpu"``, ``"gpu"``, ``"tpu"``)."""
        return self.mesh.devices.flat[0].platform

    @property
    def households(self) -> NamedSharding:
        """Sharding of per-household arrays: split over the mesh."""
        return NamedSharding(self.mesh, P(self.axis))

    @property
    def replicated(self) -> NamedSharding:
        """Sharding of everything else: a copy on every device."""
        return NamedSharding(self.mesh, P())

    # jaxlib defines jax.Device by assignment from its compiled module, which has no type stubs.
    def local(self) -> list[tuple[int, jax.Device, int, int]]:  # pyright: ignore[reportInvalidTypeForm]
        """This process's devices: ``(position in the mesh, device, first household, end household)``."""
        me = jax.process_index()
        return [
            (i, d, i * self.block, (i + 1) * self.block)
            for i, d in enumerate(self.mesh.devices.flat)
            if d.process_index == me
        ]

    # -- host -> mesh ------------------------------------------------------------------------

    def put_households(self, x: Any, fill: Any = 0) -> Array:
        """A host array of shape (n, ...) as a global array of shape (padded, ...), split over the mesh.

        Each process fills only its own devices' blocks; the padding takes ``fill``.
        """
        x = np.asarray(x)
        n = self.n

        def block(index):
            sl = index[0]
            start, stop = sl.start or 0, self.padded if sl.stop is None else sl.stop
            part = x[start : min(stop, n)]
            if stop > n:
                pad = np.full((stop - max(start, n),) + x.shape[1:], fill, x.dtype)
                part = np.concatenate([part, pad])
            return part

        return jax.make_array_from_callback((self.padded,) + x.shape[1:], self.households, block)

    def put_replicated(self, x: Any) -> Array:
        """A host value as a global array with a copy on every device."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])

    def mask(self) -> Array:
        """True for the real households, False for the padding; shape (padded,), split over the mesh."""
        return self.put_households(np.ones(self.n, bool), fill=False)

    def place(self, tree: _Tree) -> _Tree:
        """An unpadded pytree (a state, a term) on the mesh: leaves with leading dimension ``n`` split
        and padded with zeros, every other leaf replicated. Leaves already on this mesh are kept.
        """

        def one(x):
            if (
                isinstance(x, jax.Array)
                and isinstance(x.sharding, NamedSharding)
                and x.sharding.mesh == self.mesh
            ):
                return x
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                impl = jax.random.key_impl(x)
                return jax.random.wrap_key_data(self.put_replicated(fetch(jax.random.key_data(x))), impl=impl)
            a = fetch(x)
            if a.ndim >= 1 and a.shape[0] == self.n:
                return self.put_households(a)
            return self.put_replicated(a)

        return jax.tree_util.tree_map(one, tree)

    # -- mesh -> host ------------------------------------------------------------------------

    def unpad(self, x: Array) -> np.ndarray:
        """A per-household global array on the host without its padding, shape (n, ...)."""
        return fetch(x)[: self.n]

    def unplace(self, tree: _Tree) -> _Tree:
        """The inverse of ``place``: per-household leaves unpadded; every leaf on the default device."""
        local_device = jax.local_devices()[0]

        def one(x):
            if not isinstance(x, jax.Array):
                return x
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
            split = (
                isinstance(x.sharding, NamedSharding)
                and x.ndim >= 1
                and tuple(x.sharding.spec)[:1] == (self.axis,)
            )
            a = self.unpad(x) if split else fetch(x)
            return jax.device_put(a, local_device)

        return jax.tree_util.tree_map(one, tree)


_DEVICES_FORMS = "devices must be None, a device count, a sequence of jax.Device or a 1-D mesh"


def resolve_devices(devices: DevicesLike, n: int) -> Layout | None:
    """The layout of a sharded run, from the ``devices`` argument of ``calibrate``.

    Args:
      devices: None (one device, no sharding), an int (the first N of ``jax.devices()``), a
        sequence of ``jax.Device``, or a 1-D ``jax.sharding.Mesh``.
      n: the number of households.

    Returns:
      A ``Layout``, or None for ``devices=None``.

    Raises:
      ValueError: a count below 1 or above the devices available, more devices than households,
        a mesh that is not 1-D, repeated devices, or a sequence that holds something else.
    """
    if devices is None:
        if jax.process_count() > 1:
            raise ValueError(
                f"devices=None runs on one device, but this is process {jax.process_index()} of a "
                f"{jax.process_count()}-process run; pass devices=jax.device_count() (every device of "
                f"every process) or a mesh, the same on every process."
            )
        return None
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1 or devices.devices.ndim != 1:
            raise ValueError(
                f"devices must be a 1-D mesh (households are split along one axis), got a mesh with "
                f"axes {devices.axis_names} and shape {devices.devices.shape}; build one with "
                f"jax.sharding.Mesh(jax.devices()[:k], ('households',))."
            )
        mesh = devices
    else:
        if isinstance(devices, bool):
            raise ValueError(f"{_DEVICES_FORMS}, got {devices!r}.")
        if isinstance(devices, (int, np.integer)):
            count = int(devices)
            available = jax.device_count()
            if not 1 <= count <= available:
                raise ValueError(
                    f"devices={count} but {available} device(s) are available; pass 1 to {available} (on CPU, "
                    f"XLA_FLAGS=--xla_force_host_platform_device_count=N, set before importing jax, makes N)."
                )
            chosen = jax.devices()[:count]
        elif isinstance(devices, Sequence) and not isinstance(devices, (str, bytes)):
            chosen = list(devices)
            if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
                raise ValueError(
                    "devices must be a non-empty sequence of jax.Device (e.g. jax.devices()[:4]), got "
                    f"{[type(d).__name__ for d in chosen][:4]}."
                )
            if len(set(chosen)) != len(chosen):
                raise ValueError("devices lists the same device more than once.")
        else:
            raise ValueError(f"{_DEVICES_FORMS}, got {type(devices).__name__}.")
        mesh = Mesh(np.asarray(chosen, dtype=object), (AXIS,))
    size = int(mesh.devices.size)
    if size > n:
        raise ValueError(
            f"devices: {size} devices for {n} households; every device needs at least one household, so "
            f"pass at most {n} devices."
        )
    platforms = {d.platform for d in mesh.devices.flat}
    if len(platforms) > 1:
        raise ValueError(f"devices mixes platforms {sorted(platforms)}; use devices of one kind.")
    if not any(d.process_index == jax.process_index() for d in mesh.devices.flat):
        raise ValueError(
            f"devices holds no device of this process ({jax.process_index()}); every process of a "
            f"multi-process run must take part with its own devices."
        )
    return Layout(mesh, int(n))


# --------------------------------------------------------------------------------------------
# Host transfers that work in multi-process runs
# --------------------------------------------------------------------------------------------


def fetch(x: Any) -> np.ndarray:
    """A (global) array's value on the host, whole, in any process of a multi-process run.

    Collective when ``x`` spans devices of other processes: every process must call it alike.
    """
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fetch_tree(tree: Any) -> Any:
    """``fetch`` applied to every leaf of a pytree."""
    return jax.tree_util.tree_map(fetch, tree)


def across_processes(value: Any) -> np.ndarray:
    """The values of every process, stacked (shape (processes, ...)); ``value[None]`` in one process."""
    value = np.asarray(value)
    if jax.process_count() == 1:
        return value[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value)).reshape((jax.process_count(),) + value.shape)


# --------------------------------------------------------------------------------------------
# The sharded matrix
# --------------------------------------------------------------------------------------------


def _chunk_operators(spec: tuple, leaves: list[Array]) -> list[MatrixOperator]:
    """Inside ``shard_map``: this device's chunk operators, from its slice of the stacked leaves."""
    count = leaves[0].shape[1]
    return [jax.tree_util.tree_unflatten(spec[2], [x[0, j] for x in leaves]) for j in range(count)]


def _chunk_products(spec: tuple, leaves: list[Array], x: Array, transpose: bool) -> Array:
    """Each of this device's chunks' own product: ``M_c @ x_c`` (shape (chunks, m)), or ``M_c.T @ x``
    for the replicated ``x`` (shape (chunks, chunk)).
    """
    count, (m, width) = leaves[0].shape[1], spec[4]
    if spec[3] == "scipy":  # one host callback for all chunks of the device, each chunk's own product
        tokens = leaves[0][0]
        return scipy_chunk_products(
            tokens, x if transpose else x.reshape(count, width), width if transpose else m, transpose
        )
    ops = _chunk_operators(spec, leaves)
    if transpose:
        return jnp.stack([op.rmatvec(x) for op in ops])
    return jnp.stack([op.matvec(x[j * width : (j + 1) * width]) for j, op in enumerate(ops)])


def _matvec_impl(spec: tuple, leaves: list[Array], w: Array) -> Array:
    mesh, axis = spec[0], spec[1]

    def local(lv, w_i):
        parts = _chunk_products(spec, lv, w_i, False)
        # Every device receives every chunk's partial sums and adds them in chunk order: the
        # same additions, in the same order, whatever the number of devices (a psum's order
        # depends on it, and the optimizer amplifies last-bit differences over the epochs).
        parts = jax.lax.all_gather(parts, axis, tiled=True)
        total = parts[0]
        for j in range(1, parts.shape[0]):
            total = total + parts[j]
        return total

    return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(), check_vma=False)(
        leaves, w
    )


def _rmatvec_impl(spec: tuple, leaves: list[Array], r: Array) -> Array:
    mesh, axis = spec[0], spec[1]

    def local(lv, r_full):
        return _chunk_products(spec, lv, r_full, True).reshape(-1)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P()), out_specs=P(axis), check_vma=False)(
        leaves, r
    )


# The predictions are replicated, so the cotangent of M @ w reaching each device is the whole
# (replicated) r: the gradient is each device's own M_i.T @ r, with no communication.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sharded_matvec(spec: tuple, leaves: list[Array], w: Array) -> Array:
    return _matvec_impl(spec, leaves, w)


def _sm_fwd(spec, leaves, w):
    return _matvec_impl(spec, leaves, w), leaves


def _sm_bwd(spec, leaves, g):
    return None, _rmatvec_impl(spec, leaves, g)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sharded_rmatvec(spec: tuple, leaves: list[Array], r: Array) -> Array:
    return _rmatvec_impl(spec, leaves, r)


def _srm_fwd(spec, leaves, r):
    return _rmatvec_impl(spec, leaves, r), leaves


def _srm_bwd(spec, leaves, g):
    return None, _matvec_impl(spec, leaves, g)


_sharded_matvec.defvjp(_sm_fwd, _sm_bwd)
_sharded_rmatvec.defvjp(_srm_fwd, _srm_bwd)


@jax.tree_util.register_pytree_node_class
class ShardedOperator(MatrixOperator):
    """M split by columns over a 1-D mesh: one block operator per device, stacked along the mesh axis.

    ``shape`` is ``(m, padded households)``; vectors of households are global arrays split over the
    mesh (``Layout.households``), vectors of targets are replicated.

    Each device holds ``chunks / devices`` chunk operators (``Layout.chunks``): ``M @ w`` computes
    each chunk's partial target sums alone, gathers all of them on every device and adds them in
    chunk order, so the predictions are bitwise the same on 1, 2, 4 or 8 devices; ``M.T @ r`` is
    each chunk's own product.

    Args:
      leaves: the chunk operators' array leaves, stacked to shape (devices, chunks per device, ...)
        and split over the mesh along the first axis.
      spec: ``(mesh, axis, treedef of one chunk operator, backend, (m, chunk))``, static.
      shape: ``(m, padded)``.
      dtype: value dtype.
      backend: the block operators' backend.
      keep: objects to keep alive with the operator (the host matrices of ``"scipy"`` blocks).
    """

    def __init__(
        self,
        leaves: list[Array],
        spec: tuple,
        shape: tuple[int, int],
        dtype: DTypeLike,
        backend: Backend,
        keep: Any = None,
    ):
        self.leaves = list(leaves)
        self.spec = spec
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self._keep = keep

    # Set by shard_operator on the operator it returns (copies made by jax.tree operations lack them):
    # the entries' fingerprint lanes (when built with fingerprint=True), the real households, the layout.
    lanes: np.ndarray | None = None
    households: int
    layout: Layout

    def matvec(self, w: Array) -> Array:
        """``M @ w``: ``w`` of shape (padded,) split over the mesh -> shape (m,), replicated."""
        return _sharded_matvec(self.spec, self.leaves, self._vector("w", w, self.shape[1]))

    def rmatvec(self, r: Array) -> Array:
        """``M.T @ r``: ``r`` of shape (m,) -> shape (padded,), split over the mesh."""
        return _sharded_rmatvec(self.spec, self.leaves, self._vector("r", r, self.shape[0]))

    def fingerprint(self, targets: ArrayLike) -> str | None:
        """The checkpoint fingerprint of M and ``targets`` (equal to ``checkpoint.fingerprint`` of the
        whole matrix), when the operator was built with ``fingerprint=True``; else None.
        """
        lanes = self.lanes
        return (
            None if lanes is None else ckpt.fingerprint_of((self.shape[0], self.households), lanes, targets)
        )

    def tree_flatten(self):
        return (self.leaves,), (self.spec, self.shape, self.dtype.str, self.backend)

    @classmethod
    def tree_unflatten(cls, aux, children):
        spec, shape, dtype, backend = aux
        return cls(children[0], spec, shape, dtype, backend)

    def __repr__(self) -> str:
        return (
            f"ShardedOperator(shape={self.shape}, backend={self.backend!r}, devices={self.spec[0].devices.size}, "
            f"dtype={self.dtype.name})"
        )


def _host_threads(local_devices: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_devices))


def shard_operator(
    M: Any,
    layout: Layout,
    *,
    m: int,
    backend: Backend = "auto",
    dtype: DTypeLike = np.float32,
    name: str = "M",
    fingerprint: bool = False,
) -> ShardedOperator:
    """Builds this process's column blocks of ``M`` and the sharded operator over the layout's mesh.

    Args:
      M: a whole matrix (scipy sparse, NumPy, JAX) or ``ColumnBlocks``; only the columns of this
        process's devices are built. The result can be passed to ``calibrate`` as ``M`` (with
        ``devices=None``) to fit the same matrix several times without building it again.
      layout: the layout.
      m: the number of targets (rows of every block).
      backend: ``"auto"``, ``"dense"``, ``"sparse"``, ``"ell"`` or ``"scipy"`` (CPU devices only),
        the same for every block; ``"auto"`` applies ``choose_backend`` to one block's shape and
        mean nonzeros on the mesh's platform.
      dtype: float32 or float64.
      name: the argument's name for errors.
      fingerprint: also hash the entries (``checkpoint.csr_lanes``) for ``op.fingerprint(y)``.

    Returns:
      A ``ShardedOperator`` of shape ``(m, layout.padded)``.
    """
    local = layout.local()
    per_device = layout.chunks // layout.size
    # One chunk of households per entry: (device, first household, end household).
    spans = [
        (d, lo + j * layout.chunk, lo + (j + 1) * layout.chunk)
        for _, d, lo, _ in local
        for j in range(per_device)
    ]
    cols = [colblocks.column_range(M, lo, hi, m=m, dtype=dtype, name=name) for _, lo, hi in spans]
    lanes = None
    if fingerprint:
        with np.errstate(over="ignore"):
            mine = sum(
                (
                    ckpt.csr_lanes(c, layout.n, offset=lo, transposed=True)
                    for c, (_, lo, _) in zip(cols, spans, strict=True)
                ),
                np.zeros(2, np.uint64),
            )
            lanes = across_processes(mine).sum(axis=0, dtype=np.uint64)
    counts = across_processes([sum(c.nnz for c in cols), max(c.nnz for c in cols)])
    total_nnz, most = int(counts[:, 0].sum()), int(counts[:, 1].max())
    platform = layout.platform
    if backend == "auto":
        backend = choose_backend(
            (m, layout.chunk),
            -(-total_nnz // layout.chunks),
            itemsize=np.dtype(dtype).itemsize,
            platform=platform,
        )
    if backend == "scipy" and platform != "cpu":
        raise ValueError(
            f"backend='scipy' runs scipy on the host and needs CPU devices; the mesh has {platform} "
            f"devices: use backend='auto' (pure XLA, 'ell' or 'dense')."
        )
    if backend == "ell":
        widths = _agree_ell_widths(cols, m)
    chunk_ops: list[MatrixOperator] = []
    threads = _host_threads(len(local))
    for c in cols:
        if backend == "dense":
            chunk_ops.append(DenseOperator(c.T.toarray()))
        elif backend == "sparse":
            data, rows, idx = sparse_parts(c.T.tocsr(), most)
            chunk_ops.append(SparseOperator(data, rows, idx, (m, layout.chunk)))
        elif backend == "ell":
            chunk_ops.append(EllOperator(*ell_parts(c.T.tocsr(), c, *widths), shape=(m, layout.chunk)))
        else:
            chunk_ops.append(ScipyOperator(None, threads, transposed=c))
    del cols
    flat = [jax.tree_util.tree_flatten(op) for op in chunk_ops]
    treedef = flat[0][1]
    leaves = []
    for k in range(len(flat[0][0])):
        parts = []
        for i, (_, d, _, _) in enumerate(local):
            mine = [np.asarray(f[0][k]) for f in flat[i * per_device : (i + 1) * per_device]]
            parts.append(jax.device_put(np.stack(mine)[None], d))
        shape = (layout.size,) + parts[0].shape[1:]
        leaves.append(jax.make_array_from_single_device_arrays(shape, layout.households, parts))
    keep = chunk_ops if backend == "scipy" else None
    spec = (layout.mesh, layout.axis, treedef, backend, (m, layout.chunk))
    op = ShardedOperator(leaves, spec, (m, layout.padded), dtype, backend, keep)
    op.lanes, op.households, op.layout = lanes, layout.n, layout
    return op


def _agree_ell_widths(cols: list, m: int) -> tuple[int, int, int, int]:
    """The ``"ell"`` chunk widths (of M's rows, of M.T's rows) that cost least over all blocks, and
    the most chunks any block needs in each orientation: shared by every block, agreed across processes.
    """
    fwd = [np.bincount(c.indices, minlength=m) for c in cols]  # row lengths of M_i: targets
    bwd = [np.diff(c.indptr) for c in cols]  # row lengths of M_i.T: households
    costs = across_processes(np.stack([sum(ell_costs(x) for x in fwd), sum(ell_costs(x) for x in bwd)]))
    fwd_width, bwd_width = (ell_width(c) for c in costs.sum(axis=0))
    chunks = across_processes(
        [max(ell_chunks(x, fwd_width) for x in fwd), max(ell_chunks(x, bwd_width) for x in bwd)]
    )
    return fwd_width, bwd_width, int(chunks[:, 0].max()), int(chunks[:, 1].max())


# --------------------------------------------------------------------------------------------
# The problem on the mesh, and predictions
# --------------------------------------------------------------------------------------------


def shard_problem(problem: Any, layout: Layout) -> Any:
    """A ``model.Problem`` whose operator is already sharded, with every other array on the mesh:
    targets, scales, weights, budget and aggregate terms replicated, the distance term's design
    weights and the weight bounds split, and the padding mask.
    """
    mask = layout.mask()
    rep = functools.partial(jax.tree_util.tree_map, layout.put_replicated)
    terms = tuple(t.sharded(layout, mask) if hasattr(t, "sharded") else rep(t) for t in problem.terms)
    bounds = problem.bounds
    if bounds is not None:  # per-household [lower, upper]; the padding's (shut gates) is [0, 1]
        bounds = type(bounds)(
            layout.put_households(np.asarray(bounds.lower), fill=0.0),
            layout.put_households(np.asarray(bounds.upper), fill=1.0),
        )
    return problem._replace(
        targets=layout.put_replicated(problem.targets),
        scale=layout.put_replicated(problem.scale),
        weights=layout.put_replicated(problem.weights),
        terms=terms,
        budget=None if problem.budget is None else rep(problem.budget),
        mask=mask,
        bounds=bounds,
    )


def block_predictions(M: Any, op: MatrixOperator, weights: np.ndarray, layout: Layout) -> np.ndarray:
    """``M @ weights`` for column-block input: in float64 on the host when the blocks are in memory,
    else (blocks built on demand, never all on one host; or a ready ``ShardedOperator``) the
    devices' float32 product.
    """
    blocks = colblocks.as_column_blocks(M) if colblocks.is_column_input(M) else None
    w = np.asarray(weights, np.float64)
    if blocks is not None and blocks.in_memory:
        out = np.zeros(op.shape[0])
        for i in range(len(blocks)):
            lo, hi = int(blocks.offsets[i]), int(blocks.offsets[i + 1])
            out += np.asarray(blocks.block(i) @ w[lo:hi], np.float64).reshape(-1)
        return out
    return fetch(_product(op, layout.put_households(np.asarray(weights, op.dtype)))).astype(np.float64)


# Compiled once per operator structure (shard_map run eagerly compiles primitive by primitive).
_product = jax.jit(lambda op, w: op.matvec(w))
