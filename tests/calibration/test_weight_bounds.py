"""``weight_bounds=(L, U)`` in the L0 engine: every active household's w/d within [L, U], exactly.

The weights are parameterised as ``w = d (L + (U - L) sigmoid(theta)) * gate`` and an open
deterministic gate counts fully, so the bound holds by construction (up to float32 rounding of
``L d``, which the returned weights are nudged out of): checked on the World Bank sample at every
chunk of training and in the returned weights, with keep-K, distances, polish, checkpoints, the
object API and the command line.
"""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import l0jax
from l0jax._src import cli
from l0jax._src.calibration import engine, model
from l0jax._src.calibration.checkpoint import CheckpointError

pytest.importorskip("svy")

from l0jax.demo import world_bank_survey

LO, HI = 0.5, 2.0


@pytest.fixture(scope="module")
def wb():
    p = world_bank_survey("sample")
    return p.matrix, p.targets, p.initial_weights


def _ratios(weights, d):
    w = np.asarray(weights).astype(np.float64)
    active = w > 0
    return w[active] / d[active], active


class BoundsWatcher:
    """A fit callback: the deterministic and the ungated weights of the state at every chunk end."""

    def __init__(self, d, bounds):
        self.d, self.bounds, self.worst = d, bounds, []

    def __call__(self, info):
        st = info.state
        temp = engine.current_temperature(st.opt_state)
        with jax.numpy_dtype_promotion("standard"):
            gates = model.deterministic_gates(st.params, temp, st.hparams, "median", self.bounds)
            w = model.gated_weights(st.params["log_weight"], gates, self.bounds)
            base = model.base_weights(st.params["log_weight"], self.bounds)
        r, _ = _ratios(w, self.d)
        b = np.asarray(base, np.float64) / self.d
        self.worst.append((r.min(), r.max(), b.min(), b.max()))


@pytest.mark.parametrize(
    "kw",
    [
        {"lambda_l0": 2e-4},
        {"target_active": 600, "distance": "chi2", "distance_strength": 1e-3},
        {"use_gates": False, "distance": "raking", "distance_strength": 1e-3, "lambda_l0": 0.0},
    ],
)
def test_active_ratios_stay_within_bounds_on_the_world_bank_sample(wb, kw):
    M, y, d = wb
    bounds = model.make_weight_bounds((LO, HI), d, d.size)
    watch = BoundsWatcher(d, bounds)
    res = l0jax.calibrate(
        M,
        y,
        key=0,
        init_weights=d,
        weight_bounds=(LO, HI),
        loss_type="relative",
        lr=0.05,
        epochs=600,
        log_every=100,
        callbacks=[watch],
        **kw,
    )
    r, active = _ratios(res.weights, d)
    assert active.sum() >= 300
    assert r.min() >= LO and r.max() <= HI
    assert len(watch.worst) == 6
    slack = 1e-6  # float32 rounding of L d inside training (the returned weights are exact)
    for lo_det, hi_det, lo_base, hi_base in watch.worst:
        assert lo_det >= LO * (1 - slack) and hi_det <= HI * (1 + slack)
        assert lo_base >= LO * (1 - slack) and hi_base <= HI * (1 + slack)
    if "target_active" in kw:
        assert res.active_count == 600


def test_without_bounds_the_same_fit_leaves_them(wb):
    """The test above is real: unbounded, the same fit puts ratios outside [0.5, 2] (seeds 0-9: from
    0.0-0.12 up to 2.6-3.3).
    """
    M, y, d = wb
    res = l0jax.calibrate(
        M, y, key=0, init_weights=d, loss_type="relative", lr=0.05, epochs=600, log_every=100, lambda_l0=2e-4
    )
    r, _ = _ratios(res.weights, d)
    assert r.min() < LO or r.max() > HI


def test_checkpoints_resume_bitwise_and_refuse_other_bounds(wb, tmp_path):
    M, y, d = wb
    kw = dict(
        key=0,
        init_weights=d,
        weight_bounds=(LO, HI),
        loss_type="relative",
        lr=0.05,
        lambda_l0=2e-4,
        log_every=100,
    )
    full = l0jax.calibrate(M, y, epochs=400, **kw)
    path = tmp_path / "ck.npz"
    l0jax.calibrate(M, y, epochs=200, checkpoint_path=path, **kw)
    resumed = l0jax.calibrate(M, y, epochs=400, checkpoint_path=path, resume=True, **kw)
    np.testing.assert_array_equal(resumed.weights, full.weights)
    with pytest.raises(CheckpointError, match="weight_bounds"):
        l0jax.calibrate(
            M, y, epochs=400, checkpoint_path=path, resume=True, **(kw | {"weight_bounds": (0.4, 2.0)})
        )


def test_object_api_keeps_bounds_and_refuses_new_ones(wb):
    M, y, d = wb
    fitted = l0jax.SparseCalibrationWeights(n_features=d.size, init_weights=d, seed=1)
    fitted.fit(M, y, lambda_l0=2e-4, lr=0.05, epochs=300, loss_type="relative", weight_bounds=(LO, HI))
    for w in (fitted.get_weights(deterministic=True), fitted.result_.weights):
        r, _ = _ratios(w, d)
        assert r.min() >= LO and r.max() <= HI
    sampled = fitted.get_weights(deterministic=False)
    assert np.all(sampled.astype(np.float64) <= HI * d * (1 + 1e-6))
    with pytest.raises(ValueError, match="weight_bounds"):
        fitted.fit(M, y, epochs=10, weight_bounds=(0.3, 3.0))
    fitted.fit(M, y, lr=0.05, epochs=20, loss_type="relative", weight_bounds=[LO, HI])  # the same, as a list
    r, _ = _ratios(fitted.get_weights(deterministic=True), d)
    assert r.min() >= LO and r.max() <= HI


def test_round_into_bounds_nudges_float32_rounding_inside():
    d = np.array([0.1, 0.3, 7.7, 1e5 / 3])
    w = (LO * d).astype(np.float32)
    w[-1] = np.float32(HI * d[-1])
    assert np.any(w.astype(np.float64) / d < LO) or np.any(
        w.astype(np.float64) / d > HI
    )  # rounding left them
    fixed = model.round_into_bounds(w, d, (LO, HI))
    r = fixed.astype(np.float64) / d
    assert np.all((r >= LO) & (r <= HI)) and fixed.dtype == np.float32
    np.testing.assert_allclose(fixed, w, rtol=2e-7)
    assert model.round_into_bounds(np.zeros(4, np.float32), d, (LO, HI)).sum() == 0  # closed gates stay 0


def test_bounded_map_starts_at_the_design_weights():
    d = np.array([1.0, 2.0, 50.0])
    theta = model.initial_bounded_logit((LO, HI), 3)
    w = model.bounded_weights(jnp.asarray(theta, jnp.float32), model.make_weight_bounds((LO, HI), d, 3))
    np.testing.assert_allclose(w, d, rtol=1e-6)
    bounds = model.make_weight_bounds((LO, HI), d, 3)
    extreme = model.bounded_weights(jnp.asarray([-1e4, 0.0, 1e4], jnp.float32), bounds)
    np.testing.assert_allclose(extreme, [LO * 1.0, 1.25 * 2.0, HI * 50.0], rtol=1e-6)


@pytest.mark.parametrize("bad", [(2.0, 0.5), (-0.1, 2.0), (0.5, np.inf), (1.0,), "ab"])
def test_bad_bounds_are_named(bad):
    M = np.ones((2, 5))
    with pytest.raises(ValueError, match="weight_bounds"):
        l0jax.calibrate(M, [5.0, 5.0], key=0, epochs=1, weight_bounds=bad)


def test_cli_bounds(tmp_path, capsys):
    rng = np.random.default_rng(0)
    M = sp.random(15, 300, density=0.3, format="csr", random_state=rng)
    d = rng.uniform(1, 3, 300)
    y = M @ (d * rng.uniform(0.7, 1.4, 300))
    sp.save_npz(tmp_path / "M.npz", M)
    (tmp_path / "t.csv").write_text("".join(f"{float(v)!r}\n" for v in y))
    (tmp_path / "w0.csv").write_text("weight\n" + "".join(f"{float(v)!r}\n" for v in d))
    args = [
        "calibrate",
        "--matrix",
        tmp_path / "M.npz",
        "--targets",
        tmp_path / "t.csv",
        "--initial-weights",
        tmp_path / "w0.csv",
        "--target-active",
        200,
        "--epochs",
        300,
        "--quiet",
    ]
    assert cli.main([str(a) for a in [*args, "--out", tmp_path / "run", "--bounds", 0.6, 1.5]]) == 0
    with open(tmp_path / "run" / "weights.csv") as f:
        w = np.array([float(r["weight"]) for r in csv.DictReader(f)])
    r, active = _ratios(w, d)
    assert abs(active.sum() - 200) <= 10 and r.min() >= 0.6 and r.max() <= 1.5
    capsys.readouterr()
    assert cli.main([str(a) for a in [*args, "--out", tmp_path / "bad", "--bounds", 2, 1]]) == 2
    assert "--bounds 2 1: weight_bounds=(L, U) needs 0 <= L < U" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
