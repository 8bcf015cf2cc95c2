"""Matrix operators: products equal scipy's, gradients are the transpose products, inputs are checked."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from l0jax._src import host_operators, operators
from l0jax._src.operators import as_operator, choose_backend

BACKENDS = ("dense", "sparse", "scipy")


def _matrix(seed=0, m=40, n=300, density=0.2):
    rng = np.random.default_rng(seed)
    return sp.random(
        m, n, density=density, format="csr", random_state=rng, data_rvs=lambda k: rng.lognormal(1.5, 0.25, k)
    ).astype(np.float32)


def _vectors(m, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n).astype(np.float32), rng.normal(size=m).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc", "coo", "numpy", "jax"])
def test_products_match_scipy(backend, fmt):
    M = _matrix()
    w, r = _vectors(*M.shape)
    given = {
        "csr_matrix": M,
        "csr_array": sp.csr_array(M),
        "csc": M.tocsc(),
        "coo": M.tocoo(),
        "numpy": M.toarray(),
        "jax": jnp.asarray(M.toarray()),
    }[fmt]
    op = as_operator(given, backend=backend)
    assert op.backend == backend and op.shape == M.shape
    np.testing.assert_allclose(op.matvec(w), M @ w, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(op.rmatvec(r), M.T @ r, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(op @ w, M @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_are_transpose_products(backend):
    M = _matrix()
    w, r = _vectors(*M.shape)
    op = as_operator(M, backend=backend)
    # d/dw <r, M w> = M^T r and d/dr <w, M^T r> = M w, through jit with the operator as an argument.
    gw = jax.jit(jax.grad(lambda w, op: jnp.vdot(jnp.asarray(r), op.matvec(w))))(jnp.asarray(w), op)
    gr = jax.jit(jax.grad(lambda r, op: jnp.vdot(jnp.asarray(w), op.rmatvec(r))))(jnp.asarray(r), op)
    np.testing.assert_allclose(gw, M.T @ r, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gr, M @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_vectors(backend):
    M = _matrix()
    w, _r = _vectors(*M.shape)
    W = np.stack([w, 2 * w, -w])
    op = as_operator(M, backend=backend)
    np.testing.assert_allclose(jax.vmap(op.matvec)(W), (M @ W.T).T, rtol=1e-5, atol=1e-4)
    grads = jax.jit(jax.vmap(jax.grad(lambda v: 0.5 * jnp.sum(op.matvec(v) ** 2))))(W)
    np.testing.assert_allclose(grads, (M.T @ (M @ W.T)).T, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_matrix_of_same_shape_and_nnz_gets_its_own_products_without_retracing(backend):
    # l0-python caches its converted matrix by (shape, nnz) and answers for the first one.
    A = _matrix(seed=0)
    B = A.copy()
    B.data = np.random.default_rng(5).lognormal(0.0, 1.0, B.nnz).astype(np.float32)
    assert A.shape == B.shape and A.nnz == B.nnz
    traces = []

    @jax.jit
    def product(op, w):
        traces.append(1)
        return op.matvec(w)

    w, _ = _vectors(*A.shape)
    opa, opb = as_operator(A, backend=backend), as_operator(B, backend=backend)
    np.testing.assert_allclose(product(opa, w), A @ w, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(product(opb, w), B @ w, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(product(opa, w), A @ w, rtol=1e-5, atol=1e-4)
    assert len(traces) == 1


def test_scipy_threads_split_rows_and_give_identical_results():
    M = _matrix(m=400, n=6000, density=0.2)  # 480k entries: two blocks of at least 200k
    w, r = _vectors(*M.shape)
    one, two = as_operator(M, backend="scipy", threads=1), as_operator(M, backend="scipy", threads=2)
    assert len(two._host.forward) == 2 and len(two._host.transpose) == 2
    assert len(one._host.forward) == 1
    # The blocks of M are views of M's arrays (scipy would copy slices smaller than half the array).
    M.indices, M.indptr = M.indices.astype(np.int32), M.indptr.astype(np.int32)
    three = as_operator(M, backend="scipy", threads=3)
    assert len(three._host.forward) == 2  # 480k entries: at most two blocks of 200k
    for blk in three._host.forward:
        assert np.shares_memory(blk.data, M.data) and np.shares_memory(blk.indices, M.indices)
    np.testing.assert_array_equal(one.matvec(w), two.matvec(w))
    np.testing.assert_array_equal(one.rmatvec(r), two.rmatvec(r))
    np.testing.assert_allclose(two.matvec(w), M @ w, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(20, 30_000), (30_000, 20)])
def test_scipy_short_outputs_scatter_and_match_scipy(shape, threads):
    # Products whose output is >= 16x shorter than their input run as CSC (scatter) products by
    # blocks of the input: M @ w for the wide matrix, M.T @ r for the tall one.
    M = _matrix(m=shape[0], n=shape[1], density=0.7)  # 420k entries: two blocks of 200k at most
    w, r = _vectors(*M.shape)
    op = as_operator(M, backend="scipy", threads=threads)
    tall = shape[0] > shape[1]
    scatter_blocks = op._host._scatter[tall][0]
    assert len(scatter_blocks) == 2 and list(op._host._scatter) == [tall]
    # Views, not copies, of the stored CSR arrays.
    stored = op._host.forward if tall else op._host.transpose
    assert all(any(np.shares_memory(c.data, b.data) for b in stored) for c in scatter_blocks)
    M64 = M.astype(np.float64)
    np.testing.assert_allclose(op.matvec(w), M64 @ w, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(op.rmatvec(r), M64.T @ r, rtol=1e-5, atol=1e-3)
    W = np.stack([w, 2 * w, -w])
    np.testing.assert_allclose(jax.vmap(op.matvec)(W), (M64 @ W.T).T, rtol=1e-5, atol=1e-3)
    grad = jax.grad(lambda v: 0.5 * jnp.sum(op.matvec(v) ** 2))(w)
    np.testing.assert_allclose(grad, M64.T @ (M64 @ w), rtol=1e-4, atol=1e-2)
    # The blocks do not depend on the thread count, so neither does any bit of the result.
    other = as_operator(M, backend="scipy", threads=3 - threads)
    np.testing.assert_array_equal(op.matvec(w), other.matvec(w))
    np.testing.assert_array_equal(op.rmatvec(r), other.rmatvec(r))


def test_scipy_operator_reuses_canonical_float32_csr_without_copying():
    M = _matrix()
    M.indices = M.indices.astype(np.int32)
    M.indptr = M.indptr.astype(np.int32)
    op = as_operator(M, backend="scipy", threads=1)
    assert np.shares_memory(op._host.forward[0].data, M.data)


def test_duplicates_and_unsorted_indices_are_summed_and_input_not_mutated():
    rows = np.array([0, 0, 1, 0, 1])
    cols = np.array([2, 0, 1, 2, 1])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    coo = sp.coo_matrix((vals, (rows, cols)), shape=(2, 3))
    dense = np.array([[2.0, 0.0, 5.0], [0.0, 8.0, 0.0]])
    unsorted = sp.csr_matrix((np.array([1.0, 2.0]), np.array([2, 0]), np.array([0, 2, 2])), shape=(2, 3))
    before = unsorted.indices.copy()
    w = np.array([1.0, 10.0, 100.0], np.float32)
    for backend in BACKENDS:
        np.testing.assert_allclose(as_operator(coo, backend=backend).matvec(w), dense @ w)
        np.testing.assert_allclose(as_operator(unsorted, backend=backend).matvec(w), [102.0, 0.0])
    np.testing.assert_array_equal(unsorted.indices, before)


def test_operator_passes_through_and_backend_mismatch_is_an_error():
    op = as_operator(_matrix(), backend="sparse")
    assert as_operator(op) is op and as_operator(op, backend="sparse") is op
    with pytest.raises(ValueError, match="already a 'sparse' operator"):
        as_operator(op, backend="dense")


def test_auto_rule():
    # Workload A of the benchmark (dense-ish, small): dense; B, C, D (large, sparse): scipy on CPU.
    assert choose_backend((200, 10_000), 600_000, platform="cpu") == "dense"
    assert choose_backend((2_000, 20_000), 4_000_000, platform="cpu") == "scipy"
    assert choose_backend((500, 200_000), 5_000_000, platform="cpu") == "scipy"
    assert choose_backend((20_000, 2_000_000), 80_000_000, platform="cpu") == "scipy"
    # A dense matrix too big for 1 GiB is never materialised.
    assert choose_backend((20_000, 2_000_000), 4 * 10**10, platform="cpu") == "scipy"
    assert choose_backend((2_000, 20_000), 4_000_000, platform="gpu") == "dense"
    assert choose_backend((20_000, 2_000_000), 80_000_000, platform="gpu") == "ell"
    assert as_operator(_matrix(m=20, n=50, density=0.5)).backend == choose_backend((20, 50), 500)


def test_freed_matrix_gives_a_clear_error():
    op = as_operator(_matrix(), backend="scipy")
    leaves, treedef = jax.tree_util.tree_flatten(op)
    del op
    gc.collect()
    orphan = jax.tree_util.tree_unflatten(treedef, leaves)
    with pytest.raises(Exception, match="no longer exists"):
        jax.block_until_ready(orphan.matvec(np.ones(300, np.float32)))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones((2, 3, 4)), "M must be a 2-D matrix"),
        (np.ones((0, 3)), "M is empty"),
        (sp.csr_matrix((3, 0)), "M is empty"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "M must be finite, but it has 1 NaN"),
        (sp.csr_matrix(np.array([[1.0, np.inf], [0.0, 1.0]])), "M must be finite"),
        (jnp.array([[1.0, jnp.nan]]), "M must be finite"),
        (np.ones((2, 2), complex), "M must hold real numbers"),
        (np.array([[1e300, 1.0]]), r"M has values up to 1e\+300, beyond float32's range"),
        (sp.csr_matrix(np.array([[-1e39, 1.0]])), r"M has values up to 1e\+39, beyond float32's range"),
        ([[1.0, 2.0], [np.inf, 0.0]], "M must be finite"),
        ("matrix.npz", "M must be a scipy sparse matrix, a NumPy array or a JAX array"),
    ],
)
def test_bad_matrices_raise_value_errors_naming_the_argument(bad, match):
    with pytest.raises(ValueError, match=match):
        as_operator(bad)


def test_too_many_entries_for_int32_indices(monkeypatch):
    # Lower the limit rather than building 2**31 entries; the check reads the same constant.
    monkeypatch.setattr(operators, "_INT32_MAX", 5)
    with pytest.raises(ValueError, match="M has 6 stored entries, more than int32 indices can address"):
        as_operator(sp.csr_matrix(np.ones((2, 3))))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of 'auto', 'dense'"):
        as_operator(np.eye(2), backend="gpu")
    with pytest.raises(ValueError, match="X must be finite"):
        as_operator(np.array([[np.nan]]), name="X")
    with pytest.raises(ValueError, match="float64 needs 64-bit JAX"):
        as_operator(np.eye(2), dtype=np.float64)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        as_operator(np.eye(2), dtype=np.int32)
    with pytest.raises(ValueError, match=r"w must be a vector of shape \(3,\)"):
        as_operator(np.ones((2, 3))).matvec(jnp.ones(4))


def test_integer_and_boolean_matrices_become_float32():
    op = as_operator(np.array([[1, 0], [2, 3]]), backend="scipy")
    assert op.dtype == np.float32
    np.testing.assert_allclose(op.matvec(np.array([1.0, 1.0], np.float32)), [1.0, 5.0])
    assert as_operator(np.eye(2, dtype=bool)).dtype == np.float32


def test_float64_when_enabled():
    M = _matrix()
    w = np.random.default_rng(2).normal(size=M.shape[1])
    with jax.enable_x64(True):
        for backend in BACKENDS:
            op = as_operator(M.astype(np.float64), backend=backend, dtype=np.float64)
            out = op.matvec(w)
            assert out.dtype == np.float64
            np.testing.assert_allclose(out, M.astype(np.float64) @ w, rtol=1e-12)


def test_registry_does_not_keep_freed_matrices():
    before = len(host_operators._REGISTRY)
    ops = [as_operator(_matrix(seed=s), backend="scipy") for s in range(3)]
    assert len(host_operators._REGISTRY) == before + 3
    del ops
    gc.collect()
    assert len(host_operators._REGISTRY) == before
