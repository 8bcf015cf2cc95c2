"""Sharded calibration on emulated CPU devices (run by tests/calibration/test_multidevice.py with 8 of them).

One problem serves most tests, so the compiled steps are shared: 120 targets x 1,003 households
(1,003 is no multiple of 8, so every layout pads), a half-sparse truth, relative loss.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax.sharding import Mesh

import l0jax
from l0jax._src.calibration import model, sharding
from l0jax._src.calibration.blocks import ColumnBlocks

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (emulated) devices")

M_ROWS, N = 120, 1003
# The scipy backend: what "auto" picks for production-sized matrices on CPU.
FIT = dict(
    lambda_l0=1e-3,
    lr=0.05,
    epochs=100,
    log_every=50,
    loss_type="relative",
    init_keep_prob=0.2,
    backend="scipy",
)


@functools.cache
def problem():
    rng = np.random.default_rng(0)
    M = sp.random(M_ROWS, N, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    w = rng.lognormal(0.0, 0.5, N)
    w[rng.random(N) < 0.5] = 0.0
    return M, M @ w


@functools.cache
def fit(devices, key=0):
    M, y = problem()
    return l0jax.calibrate(M, y, key=key, devices=devices, **FIT)


def test_layouts_pad_to_whole_chunks():
    lay = sharding.resolve_devices(4, N)
    assert (lay.chunks, lay.chunk, lay.block, lay.padded) == (8, 126, 252, 1008)
    assert sharding.resolve_devices(3, N).chunks == 24
    assert np.asarray(lay.mask()).sum() == N and lay.mask().sharding == lay.households


def test_one_two_four_eight_devices_agree():
    ref, one = fit(None), fit(1)
    two, four, eight = fit(2), fit(4), fit(8)
    # 2, 4 and 8 devices add the same chunk sums in the same order, and draw the same noise.
    for other in (four, eight):
        np.testing.assert_array_equal(other.weights, two.weights)
        np.testing.assert_array_equal(other.history["data"], two.history["data"])
        # The penalties' sums over households follow XLA's partitioning: equal to rounding.
        np.testing.assert_allclose(other.history["loss"], two.history["loss"], rtol=1e-6)
    # No mesh (one sum over all households), one device (eight chunk sums) and several devices
    # (XLA fuses, and contracts multiply-adds, differently in a partitioned program) differ in
    # the last bits, which the optimizer carries along.
    assert 0 < ref.active_count <= N - 5
    scale = ref.weights.max()
    for other in (one, two, four, eight):
        np.testing.assert_array_equal(other.active, ref.active)
        # Within 1e-5 of the weights' scale (measured: at most 6e-7 for keys 0-9). Elementwise,
        # weights whose gate is barely open (1e-4 of the largest) move relatively more.
        np.testing.assert_allclose(other.weights, ref.weights, rtol=0, atol=1e-5 * scale)
    # Results come back unpadded, on the default device, whatever the layout.
    assert eight.weights.shape == (N,) and eight.state.params["log_alpha"].shape == (N,)
    assert eight.state.params["log_alpha"].devices() == {jax.devices()[0]}


def test_gate_noise_of_a_household_does_not_depend_on_the_layout():
    la = np.random.default_rng(1).normal(size=N).astype(np.float32)
    hp = model.make_hyperparams(0.0, 0.0, -0.1, 1.1)
    key = jax.random.key(3)
    plain_noise = np.asarray(model.gate_noise(key, N, 7))
    gates = {}
    for devices in (2, 8):
        lay = sharding.resolve_devices(devices, N)
        # The noise of household j is a hash of (key, j, epoch): the padded, split array holds the
        # same values at the same global indices.
        noise = jax.jit(lambda k, x: model.gate_noise(k, x.shape[0], 7) + 0 * x)(key, lay.put_households(la))
        np.testing.assert_array_equal(np.asarray(noise)[:N], plain_noise)
        with jax.numpy_dtype_promotion("standard"):
            g = jax.jit(model.sampled_gates)(
                {"log_alpha": lay.put_households(la)}, key, jnp.float32(0.5), hp, 7, lay.mask()
            )
        gates[devices] = np.asarray(g)
        assert np.all(gates[devices][N:] == 0.0)  # the padding's gates are shut
    np.testing.assert_array_equal(gates[2], gates[8])
    with jax.numpy_dtype_promotion("standard"):
        plain = np.asarray(model.sampled_gates({"log_alpha": jnp.asarray(la)}, key, jnp.float32(0.5), hp, 7))
    np.testing.assert_allclose(gates[2][:N], plain, rtol=1e-6, atol=1e-7)


def test_padding_counts_in_no_penalty():
    # Distance and L2 terms would each count the 5 padding households (of 1,008) on 8 devices;
    # the first epoch's loss (with an aggregate penalty too) equals the unsharded one to rounding.
    M, y = problem()
    A, _ = l0jax.aggregation_matrix([i // 40 for i in range(M_ROWS)])  # 3 aggregates of 40 targets
    kw = dict(
        key=0,
        use_gates=False,
        lambda_l2=1e-3,
        distance="chi2",
        distance_strength=0.1,
        init_weights=np.full(N, 2.0),
        aggregates=[(A, 1.1 * (A @ y), 1.0)],
        epochs=1,
        log_every=1,
        lr=0.01,
        loss_type="relative",
    )
    plain = l0jax.calibrate(M, y, **kw)
    eight = l0jax.calibrate(M, y, devices=8, **kw)
    np.testing.assert_allclose(eight.history["loss"], plain.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(eight.weights, plain.weights, rtol=1e-6)


def test_keep_k_sharded_ends_at_exactly_k():
    M, y = problem()
    res = l0jax.calibrate(
        M, y, key=0, devices=4, target_active=300, lr=0.05, epochs=100, log_every=50, loss_type="relative"
    )
    assert res.active_count == 300  # counted over all devices; the final top K is global
    assert np.count_nonzero(res.gates) == 300 and res.weights.shape == (N,)


def test_sharded_resume_is_bitwise_and_moves_from_four_devices_to_two(tmp_path):
    M, y = problem()
    kw = dict(key=0, checkpoint_every=50, **FIT)
    whole = l0jax.calibrate(M, y, devices=4, checkpoint_path=tmp_path / "whole.npz", **kw)
    seen = []

    def stop_at_50(info):
        seen.append((info.epoch, info.state.params["log_alpha"].shape, info.predictions()))
        return info.epoch >= 50

    path = tmp_path / "run.npz"
    l0jax.calibrate(M, y, devices=4, checkpoint_path=path, callbacks=[stop_at_50], **kw)
    half = path.read_bytes()
    resumed = l0jax.calibrate(M, y, devices=4, checkpoint_path=path, resume=True, **kw)
    np.testing.assert_array_equal(resumed.weights, whole.weights)
    for k in whole.history:
        np.testing.assert_array_equal(resumed.history[k], whole.history[k])
    # The checkpoint is unpadded: 2 devices continue it, and add the same sums as 4 do.
    path.write_bytes(half)
    moved = l0jax.calibrate(M, y, devices=2, checkpoint_path=path, resume=True, **kw)
    np.testing.assert_array_equal(moved.weights, whole.weights)
    # Callbacks see the unpadded state, and predictions of its deterministic weights.
    epoch, shape, pred = seen[0]
    assert (epoch, shape) == (50, (N,))
    assert pred.shape == (M_ROWS,) and np.all(np.isfinite(pred))


def test_csv_log_of_a_sharded_run_matches_the_host_products(tmp_path):
    M, y = problem()
    states = []
    log = l0jax.CsvLog(tmp_path / "log.csv")
    l0jax.calibrate(M, y, key=0, devices=8, callbacks=[log, lambda info: states.append(info.state)], **FIT)
    rows = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True, dtype=None, encoding=None)
    last = states[-1]
    with jax.numpy_dtype_promotion("standard"):
        gates = model.deterministic_gates(last.params, jnp.float32(2 / 3), last.hparams, "median")
        w = np.asarray(model.gated_weights(last.params["log_weight"], gates), np.float64)
    est = rows["estimate"][rows["epoch"] == 100]
    np.testing.assert_allclose(est, M @ w, rtol=1e-5)


def test_column_blocks_give_the_full_matrix_result(tmp_path):
    M, y = problem()
    full = fit(4)
    csc = M.tocsc()
    cuts = [0, 100, 517, 900, N]
    pieces = [csc[:, a:b] for a, b in itertools.pairwise(cuts)]
    listed = l0jax.calibrate(pieces, y, key=0, devices=4, **FIT)
    np.testing.assert_array_equal(listed.weights, full.weights)
    np.testing.assert_allclose(listed.predictions, full.predictions, rtol=1e-12)
    built = []
    lazy = ColumnBlocks(
        lambda i: built.append(i) or pieces[i], widths=[b - a for a, b in itertools.pairwise(cuts)]
    )
    on_demand = l0jax.calibrate(lazy, y, key=0, devices=4, **FIT)
    np.testing.assert_array_equal(on_demand.weights, full.weights)
    np.testing.assert_allclose(
        on_demand.predictions, full.predictions, rtol=1e-5
    )  # the devices' float32 sums
    for i, p in enumerate(pieces):
        sp.save_npz(tmp_path / f"block_{i:03d}.npz", p)
    folder = ColumnBlocks.from_npz_folder(tmp_path)
    assert folder.widths == tuple(b - a for a, b in itertools.pairwise(cuts))
    np.testing.assert_array_equal(l0jax.calibrate(folder, y, key=0, devices=4, **FIT).weights, full.weights)
    # Checkpoint fingerprints do not depend on how M is given.
    from l0jax._src.calibration.checkpoint import fingerprint

    assert fingerprint(pieces, y) == fingerprint(M, y) == fingerprint(M.toarray(), y)


def test_object_api_takes_devices():
    M, y = problem()
    est = l0jax.SparseCalibrationWeights(
        n_features=N, seed=0, devices=4, init_keep_prob=FIT["init_keep_prob"], backend=FIT["backend"]
    )
    est.fit(
        M,
        y,
        lambda_l0=FIT["lambda_l0"],
        lr=FIT["lr"],
        epochs=FIT["epochs"],
        verbose_freq=50,
        loss_type="relative",
    )
    np.testing.assert_array_equal(est.get_weights(deterministic=True), fit(4).weights)
    assert est.get_active_weights()["count"] == fit(4).active_count


@pytest.mark.parametrize("backend", ["dense", "sparse", "ell", "scipy"])
def test_sharded_products_and_gradients_match_scipy(backend):
    M, _ = problem()
    lay = sharding.resolve_devices(8, N)
    op = sharding.shard_operator(M, lay, m=M_ROWS, backend=backend)
    assert op.backend == backend and op.shape == (M_ROWS, lay.padded)
    rng = np.random.default_rng(2)
    w = rng.random(N).astype(np.float32)
    r = rng.random(M_ROWS).astype(np.float32)
    ws = lay.put_households(w, fill=5.0)  # padding values must not matter: M's padded columns are empty
    M64 = M.astype(np.float64)
    np.testing.assert_allclose(np.asarray(op.matvec(ws)), M64 @ w, rtol=1e-5)
    back = np.asarray(op.rmatvec(lay.put_replicated(r)))
    np.testing.assert_allclose(back[:N], M64.T @ r, rtol=1e-5)
    assert np.all(back[N:] == 0)
    grad = jax.jit(jax.grad(lambda v: 0.5 * jnp.sum(jnp.square(op.matvec(v)))))(ws)
    np.testing.assert_allclose(np.asarray(grad)[:N], M64.T @ (M64 @ w), rtol=1e-4)


def test_bad_devices_and_blocks_are_value_errors_naming_the_argument():
    M, y = problem()
    with pytest.raises(ValueError, match="devices=9 but 8 device"):
        l0jax.calibrate(M, y, key=0, devices=9)
    with pytest.raises(ValueError, match="devices: 8 devices for 5 households"):
        l0jax.calibrate(M[:, :5], y, key=0, devices=8)
    mesh2d = Mesh(np.asarray(jax.devices()).reshape(2, 4), ("a", "b"))
    with pytest.raises(ValueError, match="devices must be a 1-D mesh"):
        l0jax.calibrate(M, y, key=0, devices=mesh2d)
    with pytest.raises(ValueError, match="devices must be a 1-D mesh"):
        l0jax.SparseCalibrationWeights(n_features=N, devices=mesh2d)
    with pytest.raises(ValueError, match="devices must be None, a device count"):
        l0jax.calibrate(M, y, key=0, devices="gpu")
    with pytest.raises(ValueError, match="devices lists the same device"):
        l0jax.calibrate(M, y, key=0, devices=[jax.devices()[0]] * 2)
    with pytest.raises(ValueError, match="M: the column blocks have different numbers of rows"):
        l0jax.calibrate([M[:, :500], M[:-1, 500:]], y, key=0, devices=2)
    lazy = ColumnBlocks(lambda i: M[:, :500] if i == 0 else M[:-1, 500:], widths=[500, N - 500])
    with pytest.raises(ValueError, match="M: column block 1 has 119 rows"):
        l0jax.calibrate(lazy, y, key=0, devices=2)
    with pytest.raises(ValueError, match="needs the widths"):
        ColumnBlocks(lambda i: M)
    with pytest.raises(ValueError, match="devices= needs the matrix itself"):
        l0jax.calibrate(l0jax._src.operators.as_operator(M), y, key=0, devices=2)


def test_a_one_dimensional_mesh_and_a_device_list_are_the_same_layout():
    devices = jax.devices()[:2]
    by_list = sharding.resolve_devices(devices, N)
    by_mesh = sharding.resolve_devices(Mesh(np.asarray(devices), ("hh",)), N)
    assert by_list.size == by_mesh.size == 2 and by_mesh.axis == "hh"
    assert by_list.block == by_mesh.block == 504
    M, y = problem()
    res = l0jax.calibrate(M, y, key=0, devices=Mesh(np.asarray(devices), ("hh",)), **FIT)
    np.testing.assert_array_equal(res.weights, fit(2).weights)
