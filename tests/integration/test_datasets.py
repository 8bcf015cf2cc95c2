"""l0jax.demo's World Bank survey problem: targets are exact census totals with support in the sample."""

import subprocess
import sys
import types

import numpy as np
import pytest

from l0jax.demo import _world_bank, district_totals, world_bank_households, world_bank_survey


@pytest.fixture(scope="module")
def sample():
    pytest.importorskip("svy")
    return world_bank_survey("sample")


@pytest.fixture(scope="module")
def census():
    pytest.importorskip("svy")
    return world_bank_survey("census")


class _Frame(dict):
    """The little of a data frame that l0jax.demo uses: ``frame[column].to_numpy()`` and ``len``."""

    def __getitem__(self, name):
        values = np.asarray(dict.__getitem__(self, name))
        return types.SimpleNamespace(to_numpy=lambda: values)

    def __len__(self):
        return len(dict.__getitem__(self, "hid"))


def _households(toilet, geo1, urbrur):
    n = len(toilet)
    return _Frame(
        hhsize=np.arange(n) % 9 + 1,
        rooms=np.arange(n) % 7 + 1,
        electricity=["Yes", "No"] * (n // 2),
        water=["Tap"] * n,
        toilet=toilet,
        quint_nat=["poorest", "poor", "average", "rich", "richest"] * (n // 5),
        geo1=geo1,
        urbrur=urbrur,
        tot_exp=np.full(n, 10.0),
        hid=np.arange(n),
        hhweight=np.full(n, 2.0),
    )


def test_sample_lacking_a_level_keeps_the_census_rows(monkeypatch):
    census = _households(["Flush", "Pit", "None"] * 10, ["g1", "g2"] * 15, ["Urban"] * 15 + ["Rural"] * 15)
    # The sample has no pit latrine and no rural household of g1: its rows must still line up with
    # the census targets, the missing levels as rows of zeros.
    sample = _households(["Flush", "None"] * 10, ["g1", "g2"] * 10, ["Urban"] * 10 + ["Rural", "Rural"] * 5)
    sample["geo1"] = np.where(np.asarray(sample["urbrur"].to_numpy()) == "Rural", "g2", "g1")
    monkeypatch.setattr(
        _world_bank, "world_bank_households", lambda pool: census if pool == "census" else sample
    )
    s, c = world_bank_survey("sample"), world_bank_survey("census")
    assert s.target_names == c.target_names
    np.testing.assert_array_equal(s.targets, c.targets)
    rows = dict(zip(s.target_names, s.matrix.toarray(), strict=True))
    np.testing.assert_array_equal(rows["toilet=Pit"], 0.0)
    np.testing.assert_array_equal(rows["region=g1/Rural"], 0.0)
    np.testing.assert_array_equal(rows["toilet=None"], np.arange(20) % 2)
    np.testing.assert_array_equal(rows["region=g2/Rural"], np.arange(20) >= 10)
    assert c.targets[c.target_names.index("toilet=Pit")] == 10


def test_census_with_unit_weights_reproduces_the_targets(census):
    assert census.matrix.shape == (len(census.target_names), 57_867)
    np.testing.assert_allclose(census.matrix @ census.initial_weights, census.targets, rtol=1e-12)
    assert census.targets[census.target_names.index("persons")] == 222_551


def test_sample_targets_have_support_and_design_weights_are_close(sample, census):
    assert sample.matrix.shape == (len(census.target_names), 825)
    np.testing.assert_array_equal(sample.targets, census.targets)
    assert len(set(sample.target_names)) == len(sample.target_names)
    support = np.diff(sample.matrix.tocsr().indptr)
    assert support.min() >= 4  # every target can be met by some weights
    np.testing.assert_allclose(sample.initial_weights.sum(), 57_867, rtol=1e-9)
    rel = sample.matrix @ sample.initial_weights / sample.targets - 1
    assert 0.05 < np.abs(rel).max() < 0.5  # design weights miss the totals: calibration has work to do


def test_district_totals(census):
    names, est, truth = district_totals(census, census.initial_weights)
    assert len(names) == 23
    np.testing.assert_allclose(est, truth)
    np.testing.assert_allclose(truth.sum(), census.targets[census.target_names.index("spending")])
    with pytest.raises(ValueError, match="weights must have shape"):
        district_totals(census, np.ones(3))


def test_household_tables(sample, census):
    sample_table, census_table = world_bank_households("sample"), world_bank_households("census")
    assert (len(sample_table), len(census_table)) == (825, 57_867)
    np.testing.assert_array_equal(sample_table["hid"].to_numpy(), sample.household_ids)
    np.testing.assert_array_equal(census_table["hid"].to_numpy(), census.household_ids)
    np.testing.assert_allclose(sample_table["hhweight"].to_numpy(), sample.initial_weights)
    assert census_table["hhsize"].to_numpy().sum() == 222_551


@pytest.mark.parametrize("load", [world_bank_survey, world_bank_households])
def test_unknown_pool(load):
    with pytest.raises(ValueError, match="unknown pool 'all'"):
        load("all")


def _modules_after(statement):
    """The loaded modules of l0jax.demo and of the demo's optional packages, after ``statement``."""
    code = (
        f"import sys; {statement}; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('l0jax.demo') "
        "or m.split('.')[0] in ('svy', 'matplotlib', 'polars'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return out.stdout.split()


def test_import_l0jax_leaves_the_demo_out():
    # A fresh interpreter shows what the import alone loads: the library never needs the demo
    # package, nor svy or matplotlib.
    assert _modules_after("import l0jax, l0jax.nn") == []
    # The demo package itself imports svy (and polars) only when data are loaded.
    assert _modules_after("import l0jax.demo") == ["l0jax.demo", "l0jax.demo._run", "l0jax.demo._world_bank"]
