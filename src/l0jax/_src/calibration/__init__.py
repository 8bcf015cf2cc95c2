"""Survey calibration with L0 gates, and the classical calibration beside it.

Modules, roughly from the bottom layer up (matrices come in through ``l0jax._src.operators``):

* ``losses``: the data losses (mse, relative, relative_abs) and the per-target group weights.
* ``penalties``: extra objective terms as registered pytrees (their strengths are traced).
* ``distance``: closeness to the design weights (chi-square, raking) as such a term.
* ``hierarchy``: penalties on aggregates of the targets (districts summing to states).
* ``model``: parameters, hyperparameters, weight bounds, state and the objective.
* ``dual``: the keep-K budget, by dual ascent on the count of open gates.
* ``engine``: pure init and step, the compiled chunked loop, the polish.
* ``checkpoint``: atomic checkpoints of the full training state, checked on load.
* ``blocks``: M given as column blocks, never assembled.
* ``sharding``: households split over a 1-D device mesh (layout, sharded operator, transfers).
* ``production``: the options around the loop (keep-K, distance, aggregates, checkpoints,
  resume, callbacks, early stopping) and the ``Run`` that applies them.
* ``diagnostics``: per-target table, target checks, weight summary, the CSV log.
* ``result``: ``CalibrationResult``.
* ``fit``: ``FitSettings`` and ``run_fit``, one fit from the arguments to the result.
* ``api``: ``calibrate``, the functional entry point.
* ``estimator``: ``SparseCalibrationWeights``, l0-python's object interface.
* ``gram``: M as Newton's method needs it (``M diag(v) M.T``), dense or per household.
* ``feasibility``: which totals conflict when no bounded weights can meet them.
* ``classical``: exact Deville-Saerndal calibration (linear, raking, logit) by Newton's method.
* ``variance``: linearised and replicate standard errors of calibrated estimates.
* ``path``: a grid of L0 strengths or keep-K counts in one vmapped run, chosen on held-out targets.
"""

from l0jax._src.calibration.api import calibrate
from l0jax._src.calibration.engine import NonFiniteLossError
from l0jax._src.calibration.estimator import SparseCalibrationWeights
from l0jax._src.calibration.model import CalibrationState
from l0jax._src.calibration.result import CalibrationResult

__all__ = [
    "CalibrationResult",
    "CalibrationState",
    "NonFiniteLossError",
    "SparseCalibrationWeights",
    "calibrate",
]
