"""The World Bank survey problem: targets are exact census totals with support in the sample."""

import numpy as np
import pytest

pytest.importorskip("svy")

from l0jax._src.datasets import district_totals, world_bank_survey  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return world_bank_survey("sample")


@pytest.fixture(scope="module")
def census():
    return world_bank_survey("census")


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


def test_unknown_pool():
    with pytest.raises(ValueError, match="unknown pool 'all'"):
        world_bank_survey("all")
