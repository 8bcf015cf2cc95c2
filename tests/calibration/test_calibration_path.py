"""``calibrate_path``: a grid of L0 strengths or keep-K counts in one compiled run, chosen on held-out targets."""

import warnings

import numpy as np
import pytest

import l0jax
from l0jax._src.calibration import path as path_module

pytest.importorskip("svy")

from l0jax.demo import world_bank_survey

HELD = np.arange(0, 47, 5)  # 10 of the 47 census totals held out
KW = dict(epochs=300, lr=0.05, loss_type="relative", log_every=100)


@pytest.fixture(scope="module")
def wb():
    p = world_bank_survey("sample")
    return p.matrix, p.targets, p.initial_weights


@pytest.fixture(scope="module")
def paths(wb):
    """The path of each key, computed once (the compiled run is shared: a new key costs ~0.2 s)."""
    M, y, d = wb
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = l0jax.calibrate_path(
                M, y, key=key, lambdas=[0.0, 1e-3, 1e-2, 3e-2], holdout=HELD, init_weights=d, **KW
            )
        return cache[key]

    return get


@pytest.fixture(scope="module")
def lambda_path(paths):
    return paths(0)


# The two tests below check what the fits select, so for every key 0-9. The machine that wrote this
# saw, for keys 0-9: all 825 households active at lambda 0, 809-817 at 1e-3, 211-237 at 1e-2 and
# 71-81 at 3e-2; the last point's held-out error 69-129 times the smallest.
@pytest.mark.parametrize("key", range(10))
def test_the_chosen_point_has_the_smallest_held_out_error(wb, paths, key):
    M, y, _ = wb
    path = paths(key)
    fit = np.setdiff1d(np.arange(47), HELD)
    np.testing.assert_array_equal(path.holdout_rows, HELD)
    np.testing.assert_array_equal(path.fit_rows, fit)
    # The errors recomputed here from each point's weights.
    rel = (M[HELD] @ path.weights.T.astype(np.float64) - y[HELD, None]) / (np.abs(y[HELD, None]) + 1)
    held = np.mean(rel**2, axis=0)
    np.testing.assert_allclose(path.holdout_error, held, rtol=1e-10)
    assert path.best == int(np.argmin(held)) and held[path.best] == held.min()
    np.testing.assert_array_equal(path.best_weights, path.weights[path.best])
    # Stronger L0 keeps fewer households; the strongest misses the held-out totals by far more.
    assert list(path.active) == sorted(path.active, reverse=True) and path.active[0] == 825
    assert path.holdout_error[-1] > 10 * path.holdout_error.min()
    assert path.history["loss"].shape == (4, 3) and list(path.history["epoch"]) == [100, 200, 300]
    assert "<- chosen" in path.summary().splitlines()[path.best + 1]


@pytest.mark.parametrize("key", range(10))
def test_a_tolerance_trades_held_out_error_for_sparsity(paths, key):
    lambda_path = paths(key)
    err, active = lambda_path.holdout_error, lambda_path.active
    assert path_module.choose(err, active, 0.0) == lambda_path.best
    tol = err[1] / err.min() - 1 + 1e-9  # the second point is just within
    picked = path_module.choose(err, active, tol)
    assert (
        active[picked] == min(active[err <= (1 + tol) * err.min()])
        and active[picked] < active[lambda_path.best]
    )
    assert path_module.choose(np.array([1.0, 1.05, 1.2]), np.array([10, 5, 1]), 0.1) == 1


def test_each_point_is_the_fit_calibrate_makes_on_the_fit_rows(wb, lambda_path):
    M, y, d = wb
    fit = lambda_path.fit_rows
    for i in (0, 2):
        single = l0jax.calibrate(
            M[fit], y[fit], key=0, lambda_l0=lambda_path.grid[i], init_weights=d, warn_targets=False, **KW
        )
        assert single.active_count == lambda_path.active[i]
        # Batched and single products round differently in float32; nothing else differs.
        np.testing.assert_allclose(
            lambda_path.weights[i], single.weights, rtol=1e-3, atol=1e-3 * single.weights.max()
        )


def test_a_new_grid_or_new_held_out_rows_do_not_recompile(wb, lambda_path):
    M, y, d = wb
    before = path_module.path_chunk._cache_size()
    other = l0jax.calibrate_path(
        M, y, key=1, lambdas=[1e-4, 2e-3, 5e-3, 1e-2], holdout=HELD + 1, init_weights=d, **KW
    )
    assert path_module.path_chunk._cache_size() == before
    assert other.grid.tolist() == [1e-4, 2e-3, 5e-3, 1e-2]


def test_keep_k_grid_keeps_exactly_k_and_bounds_hold(wb):
    M, y, d = wb
    path = l0jax.calibrate_path(
        M, y, key=0, counts=[300, 500, 700], holdout=HELD, init_weights=d, weight_bounds=(0.3, 4.0), **KW
    )
    np.testing.assert_array_equal(path.active, [300, 500, 700])
    w = path.weights.astype(np.float64)
    ratio = np.where(w > 0, w / d, 1.0)
    assert ratio.min() >= 0.3 and ratio.max() <= 4.0
    assert path.kind == "target_active" and path.best_value in (300, 500, 700)


def test_holdout_as_mask_or_fraction(wb):
    M, y, d = wb
    mask = np.zeros(47, bool)
    mask[HELD] = True
    grid = [0.0, 1e-3, 1e-2, 3e-2]  # the fixture's shapes: nothing recompiles
    kw = dict(KW, epochs=100)
    a = l0jax.calibrate_path(M, y, key=0, lambdas=grid, holdout=mask, init_weights=d, **kw)
    np.testing.assert_array_equal(a.holdout_rows, HELD)
    b = l0jax.calibrate_path(M, y, key=3, lambdas=grid, holdout=10 / 47, init_weights=d, **kw)
    c = l0jax.calibrate_path(M, y, key=3, lambdas=grid, holdout=10 / 47, init_weights=d, **kw)
    assert b.holdout_rows.size == 10 and np.array_equal(b.holdout_rows, c.holdout_rows)
    assert not np.array_equal(b.holdout_rows, HELD)
    np.testing.assert_array_equal(b.weights, c.weights)


def test_non_finite_points_are_scored_infinitely_bad():
    rng = np.random.default_rng(0)
    M = rng.uniform(0, 1, (8, 40))
    y = M @ rng.uniform(0.5, 2, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(l0jax.CalibrationWarning, match="non-finite"):
            l0jax.calibrate_path(
                M,
                y * 1e30,
                key=0,
                lambdas=[0.0, 1.0],
                holdout=[0, 1],
                loss_type="mse",
                lr=1e10,
                epochs=20,
                log_every=10,
            )


def test_temperature_is_a_constant_or_a_schedule_and_beta_its_deprecated_alias():
    rng = np.random.default_rng(0)
    M = rng.uniform(0, 1, (20, 300)) * (rng.uniform(0, 1, (20, 300)) < 0.3)
    y = M @ rng.uniform(0.5, 1.5, 300)
    kw = dict(key=0, lambdas=[1e-4, 1e-2], holdout=[0, 5, 10, 15], lr=0.1, epochs=60, log_every=30)
    new = l0jax.calibrate_path(M, y, temperature=0.4, **kw)
    with pytest.warns(
        DeprecationWarning, match="calibrate_path: beta= is deprecated; pass temperature= instead"
    ) as record:
        old = l0jax.calibrate_path(M, y, beta=0.4, **kw)
    assert record[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(old.weights, new.weights)
    assert not np.array_equal(new.weights, l0jax.calibrate_path(M, y, **kw).weights)  # 0.4 is not 2/3
    with pytest.raises(ValueError, match="give temperature or its deprecated alias beta, not both"):
        l0jax.calibrate_path(M, y, temperature=0.4, beta=0.4, **kw)
    # A schedule: each point is the fit calibrate makes with that schedule on the fit rows.
    schedule = l0jax.temperature_schedule(2.0, 0.5, 60)
    annealed = l0jax.calibrate_path(M, y, temperature=schedule, **kw)
    fit = annealed.fit_rows
    single = l0jax.calibrate(
        M[fit],
        y[fit],
        key=0,
        lambda_l0=1e-2,
        temperature=schedule,
        lr=0.1,
        epochs=60,
        log_every=30,
        loss_type="relative",
        warn_targets=False,
    )
    np.testing.assert_allclose(single.history["temperature"], [schedule(30), schedule(60)], rtol=1e-6)
    # Batched and single products round differently in float32; nothing else differs.
    np.testing.assert_allclose(
        annealed.weights[1], single.weights, rtol=1e-3, atol=1e-3 * single.weights.max()
    )
    assert not np.allclose(annealed.weights[1], new.weights[1], rtol=1e-3, atol=1e-3 * single.weights.max())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lambdas": [1e-3], "counts": [10]}, "exactly one grid"),
        ({}, "exactly one grid"),
        ({"lambdas": [-1.0]}, "lambdas must be >= 0"),
        ({"counts": [0, 5]}, "counts must lie between 1"),
        ({"counts": [1.5]}, "integers"),
        ({"lambdas": [1e-3], "holdout": 1.5}, "strictly between 0 and 1"),
        ({"lambdas": [1e-3], "holdout": np.arange(8)}, "keep at least one"),
        ({"lambdas": [1e-3], "holdout": [9]}, r"in \[0, 8\)"),
        ({"lambdas": [1e-3], "holdout": np.ones(3, bool)}, "mask must have shape"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    M = np.ones((8, 20))
    kwargs = {"holdout": [0]} | kwargs
    with pytest.raises(ValueError, match=match):
        l0jax.calibrate_path(M, np.full(8, 20.0), key=0, epochs=1, **kwargs)
