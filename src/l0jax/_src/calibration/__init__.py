"""Survey calibration with L0 gates: losses, model and state, compiled fit loop, results, APIs.

Layers, each importing only the ones before it: ``losses`` (data losses, group weights) ->
``model`` (parameters, hyperparameters, state, the objective) -> ``engine`` (init/step, the
compiled chunked loop, polish, host driver) -> ``result`` -> ``api`` (``calibrate`` and
``SparseCalibrationWeights``). Matrices come in through ``l0jax._src.operators``; ``blocks``
(column blocks of M) and ``sharding`` (households split over a device mesh: the layout, the
sharded operator, host transfers across processes) serve ``calibrate(..., devices=...)``.

Beside the L0 engine: ``classical`` (exact Deville-Saerndal calibration by Newton's method, on the
matrix layouts of ``gram``; ``feasibility`` says which totals conflict), ``variance`` (linearised and
replicate standard errors of calibrated estimates) and ``path`` (a grid of L0 strengths or keep-K
counts in one vmapped run, chosen on held-out targets).
"""

from l0jax._src.calibration.api import SparseCalibrationWeights, calibrate
from l0jax._src.calibration.engine import NonFiniteLossError
from l0jax._src.calibration.model import CalibrationState
from l0jax._src.calibration.result import CalibrationResult

__all__ = [
    "CalibrationResult",
    "CalibrationState",
    "NonFiniteLossError",
    "SparseCalibrationWeights",
    "calibrate",
]
