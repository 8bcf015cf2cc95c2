"""l0jax.demo: the ``l0jax demo`` run and the World Bank survey data it calibrates.

Real survey data for trying the calibration engine: svy's bundled World Bank household census
(57,867 households) and an 825-household sample of it with design weights.

* Data: ``world_bank_households`` (the household table of the census or the sample),
  ``world_bank_survey`` (a ``SurveyProblem``: the matrix of 47 census totals, the targets, the
  initial weights) and ``district_totals`` (an untargeted check: totals by district against the
  census).
* The demo: ``calibrate_sample`` (the sample raked to the census totals), ``select_census``
  (1,000 census households whose calibrated weights hit the totals) and ``run_demo`` (both, with
  the table and plot that ``l0jax demo`` prints and writes).

``import l0jax`` does not import this package; svy (``pip install 'l0jax[demo]'``) is needed only
when data are loaded, matplotlib only for the plot.
"""

from l0jax.demo._run import calibrate_sample, run_demo, select_census
from l0jax.demo._world_bank import SurveyProblem, district_totals, world_bank_households, world_bank_survey

__all__ = [
    "SurveyProblem",
    "calibrate_sample",
    "district_totals",
    "run_demo",
    "select_census",
    "world_bank_households",
    "world_bank_survey",
]
