"""Calibration problems built from real survey data (the World Bank household data bundled with svy).

``svy`` (``pip install svy``, or the ``demo`` extra) bundles a synthetic-but-realistic census of
57,867 households (``hld_pop_wb_2023``) and an 825-household two-stage sample of it with design
weights (``hld_sample_wb_2023``). Census totals are exact targets for the sample, and the census
itself is a pool of households to select a small calibrated subset from. svy is imported only when
a table is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from l0jax._src import checks

if TYPE_CHECKING:
    import polars as pl

Pool = Literal["sample", "census"]
"""Which World Bank table the demo draws from."""
POOLS: tuple[Pool, ...] = get_args(Pool)
# svy's names of the two bundled tables.
_TABLES = {"sample": "hld_sample_wb_2023", "census": "hld_pop_wb_2023"}

# Categories are grouped so every target has support in the 825-household sample (a target with
# no household behind it cannot be met by any weights): large households and dwellings are top-coded
# and rare water sources merged.
_HHSIZE_TOP = 8
_ROOMS_TOP = 6
_WATER_MIN_SAMPLE_COUNT = 15
_QUINTILES = ("poorest", "poor", "average", "rich", "richest")


@dataclass(frozen=True)
class SurveyProblem:
    """A calibration problem: find weights w >= 0 with ``matrix @ w`` close to ``targets``.

    Attributes:
      matrix: scipy CSR matrix of shape (n_targets, n_households); row i holds each household's
        contribution to target i (an indicator for a count, a value for a total).
      targets: array (n_targets,), the census totals.
      target_names: n_targets names such as ``"hhsize=3"``, ``"region=geo_02/Rural"``, ``"spending"``.
      initial_weights: design weights (n_households,) for the sample; ones for the census pool
        (every census household stands for itself).
      household_ids: array (n_households,) of household identifiers.
      data: the household table (a polars DataFrame) behind the matrix, for untargeted checks.
    """

    matrix: sp.csr_matrix
    targets: np.ndarray
    target_names: list[str]
    initial_weights: np.ndarray
    household_ids: np.ndarray
    data: pl.DataFrame


def world_bank_households(pool: Pool = "census") -> pl.DataFrame:
    """The World Bank household table bundled with svy, one row per household.

    The columns the calibration problems use are ``hid`` (household id), ``hhsize``, ``rooms``,
    ``electricity``, ``water``, ``toilet``, ``quint_nat`` (national quintile), ``geo1`` (region),
    ``geo2`` (district), ``urbrur`` (urban/rural) and ``tot_exp`` (spending); the sample adds its
    design weight ``hhweight``, stratum and enumeration area ``ea``. Other columns (``tot_food``,
    ``share_food``, ``pc_exp``, ...) serve as untargeted outcomes.

    Args:
      pool: ``"census"`` for the 57,867 census households (``hld_pop_wb_2023``), or ``"sample"`` for
        the 825 sampled households (``hld_sample_wb_2023``).

    Returns:
      A polars DataFrame with one row per household: (57,867 rows) for the census, (825 rows) for
      the sample.

    Raises:
      ImportError: svy is not installed (``pip install 'l0jax[demo]'``).
    """
    checks.check_choice("pool", pool, POOLS)
    try:
        import svy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the World Bank survey data come from the svy package: pip install svy "
            "(or pip install 'l0jax[demo]')."
        ) from err
    return svy.datasets.load(_TABLES[pool], source="bundled")


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy()


def _water_groups(sample: pl.DataFrame) -> dict[str, str]:
    """Maps each water source to itself, or to "other" when the sample has too few households of it."""
    values, counts = np.unique(_column(sample, "water"), return_counts=True)
    common = {v for v, c in zip(values, counts, strict=True) if c >= _WATER_MIN_SAMPLE_COUNT and v != "Other"}
    return {v: (v if v in common else "other") for v in values}


def _region(frame: pl.DataFrame) -> np.ndarray:
    return np.char.add(
        np.char.add(_column(frame, "geo1").astype(str), "/"), _column(frame, "urbrur").astype(str)
    )


def _census_levels(census: pl.DataFrame) -> dict[str, list[Any]]:
    """The toilet and region levels, from the census: the targets are census totals, so every
    frame's rows must follow these levels, even a sample in which some level has no household.
    """
    return {"toilet": sorted(set(_column(census, "toilet"))), "region": sorted(set(_region(census)))}


def _indicator_rows(
    frame: pl.DataFrame, water: dict[str, str], levels: dict[str, list[Any]]
) -> tuple[list[str], list[np.ndarray]]:
    """Target names and household-level rows (values per household) for every target."""
    names: list[str] = []
    rows: list[np.ndarray] = []

    def categorical(label: str, values: np.ndarray, levels: list[Any]) -> None:
        for level in levels:
            names.append(f"{label}={level}")
            rows.append((values == level).astype(np.float64))

    hhsize = _column(frame, "hhsize")
    size = np.where(hhsize >= _HHSIZE_TOP, f"{_HHSIZE_TOP}+", hhsize.astype(str))
    categorical("hhsize", size, [str(k) for k in range(1, _HHSIZE_TOP)] + [f"{_HHSIZE_TOP}+"])
    rooms_raw = _column(frame, "rooms")
    rooms = np.where(rooms_raw >= _ROOMS_TOP, f"{_ROOMS_TOP}+", rooms_raw.astype(str))
    categorical("rooms", rooms, [str(k) for k in range(1, _ROOMS_TOP)] + [f"{_ROOMS_TOP}+"])
    categorical("electricity", _column(frame, "electricity"), ["Yes", "No"])
    water_values = np.array([water.get(v, "other") for v in _column(frame, "water")])
    categorical("water", water_values, sorted(set(water.values())))
    categorical("toilet", _column(frame, "toilet"), levels["toilet"])
    categorical("quintile", _column(frame, "quint_nat"), list(_QUINTILES))
    categorical("region", _region(frame), levels["region"])
    names.append("persons")
    rows.append(hhsize.astype(np.float64))
    names.append("spending")
    rows.append(_column(frame, "tot_exp").astype(np.float64))
    return names, rows


def world_bank_survey(pool: Pool = "sample") -> SurveyProblem:
    """The World Bank household calibration problem (svy's bundled data), with census totals as targets.

    Targets (computed exactly from the census): households by size (1..7, 8+), by rooms (1..5, 6+),
    by electricity, water source (rare sources merged), toilet type, national quintile, region x
    urban/rural, and the totals of persons and of spending. Every target has support in the sample.

    Args:
      pool: ``"sample"`` for the 825 sampled households with their design weights ``hhweight``
        (calibrate them to the census), or ``"census"`` for all 57,867 census households with weight
        1 (select a small subset whose calibrated weights still hit the totals).

    Returns:
      A ``SurveyProblem`` with 47 targets: its matrix has shape (47, 825) for the sample and
      (47, 57867) for the census, and its ``data`` is ``world_bank_households(pool)``.

    Raises:
      ValueError: ``pool`` is neither ``"sample"`` nor ``"census"``.
      ImportError: svy is not installed (``pip install 'l0jax[demo]'``).
    """
    checks.check_choice("pool", pool, POOLS)
    census = world_bank_households("census")
    sample = world_bank_households("sample")
    water = _water_groups(sample)
    levels = _census_levels(census)
    names, census_rows = _indicator_rows(census, water, levels)
    targets = np.array([row.sum() for row in census_rows])
    frame = sample if pool == "sample" else census
    rows = census_rows if pool == "census" else _indicator_rows(sample, water, levels)[1]
    matrix = sp.csr_matrix(np.vstack(rows))
    matrix.eliminate_zeros()
    weights = _column(sample, "hhweight").astype(np.float64) if pool == "sample" else np.ones(len(census))
    return SurveyProblem(
        matrix=matrix,
        targets=targets,
        target_names=names,
        initial_weights=weights,
        household_ids=_column(frame, "hid"),
        data=frame,
    )


def district_totals(
    problem: SurveyProblem, weights: ArrayLike, column: str = "tot_exp"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Untargeted check: weighted totals of ``column`` by district (geo2) against the census.

    Args:
      problem: a problem from ``world_bank_survey``.
      weights: shape (n_households,), calibrated weights of the problem's households.
      column: a numeric household column, e.g. ``"tot_exp"`` (spending) or ``"hhsize"`` (persons).

    Returns:
      (district names, estimates, census totals): a list of the 23 district names and two arrays
      of shape (23,), in the same order.

    Raises:
      ValueError: ``weights`` does not hold one weight per household of ``problem``.
    """
    weights = np.asarray(weights, np.float64)
    if weights.shape != (problem.matrix.shape[1],):
        raise ValueError(
            f"weights must have shape ({problem.matrix.shape[1]},), one per household of the problem, "
            f"got {weights.shape}."
        )
    census = world_bank_households("census")
    districts = sorted(set(_column(census, "geo2")))
    values = _column(problem.data, column).astype(np.float64)
    own = _column(problem.data, "geo2")
    census_values = _column(census, column).astype(np.float64)
    census_districts = _column(census, "geo2")
    est = np.array([np.sum(weights * values * (own == d)) for d in districts])
    truth = np.array([np.sum(census_values * (census_districts == d)) for d in districts])
    return districts, est, truth
