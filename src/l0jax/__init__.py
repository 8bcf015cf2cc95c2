"""l0jax: L0 regularisation with hard-concrete gates in JAX (Louizos, Welling & Kingma 2018).

The public surface:

* Gates: pure functions safe under ``jit``, ``vmap`` and ``grad`` that sample
  (``hard_concrete``, ``hard_concrete_from_uniform``, ``uniform_noise``, ``hash_uniform``) and evaluate
  (``hard_concrete_eval``) hard-concrete gates, with their probabilities (``prob_nonzero``,
  ``prob_zero``, ``prob_one``), penalties (``l0_penalty``, ``l0l2_penalty``) and
  ``keep_prob_to_log_alpha``.
* Schedules: ``temperature_schedule`` and ``constant_temperature``, the optax transform
  ``anneal_temperature`` that carries the temperature in the optimizer state, and
  ``current_temperature`` to read it back.
* Calibration: survey weights that match target totals with few non-zero weights, functional
  (``calibrate`` -> ``CalibrationResult``) or with l0-python's object API
  (``SparseCalibrationWeights``), plus target checks and diagnostics (``check_targets``,
  ``target_diagnostics``, ``weight_summary``, ``CsvLog``), hierarchies of targets
  (``aggregation_matrix``), checkpoints and per-chunk callbacks for long runs
  (``CheckpointError``, ``CheckpointWarning``, ``ChunkInfo``), and matrices given by column blocks
  (``ColumnBlocks``) for runs sharded over devices and processes (``calibrate(..., devices=...)``).
* Regression: sparse linear and logistic models (``SparseL0Linear``, ``SparseL0Logistic``) and
  regularisation paths over the L0 strength (``l0_path``, ``select_lambda``).
* ``l0jax.nn``: Flax NNX gates and layers (``HardConcreteGate``, ``L0Linear``, ``L0Conv``,
  ``SparseMLP``, data-selection gates), model-wide penalties, ``prune`` and ``compress``.
"""

from l0jax._src.budget import (
    BudgetState,
    annealed_log_target,
    budget_gap,
    budget_init,
    budget_penalty,
    budget_target,
    budget_update,
)
from l0jax._src.calibration.api import calibrate
from l0jax._src.calibration.blocks import ColumnBlocks
from l0jax._src.calibration.checkpoint import CheckpointError
from l0jax._src.calibration.classical import ClassicalCalibration, calibrate_classical
from l0jax._src.calibration.diagnostics import (
    CalibrationWarning,
    CsvLog,
    TargetDiagnostics,
    check_targets,
    target_diagnostics,
    weight_summary,
)
from l0jax._src.calibration.engine import NonFiniteLossError
from l0jax._src.calibration.estimator import SparseCalibrationWeights
from l0jax._src.calibration.hierarchy import aggregation_matrix
from l0jax._src.calibration.model import CalibrationState
from l0jax._src.calibration.path import CalibrationPath, calibrate_path
from l0jax._src.calibration.production import CheckpointWarning, ChunkInfo
from l0jax._src.calibration.result import CalibrationResult
from l0jax._src.calibration.variance import (
    ReplicateCalibration,
    ReplicateWeights,
    SurveyEstimate,
    calibrated_mean,
    calibrated_total,
    design_variance,
    recalibrate_replicates,
    replicate_weights,
)
from l0jax._src.hard_concrete import (
    hard_concrete,
    hard_concrete_eval,
    hard_concrete_from_uniform,
    hash_uniform,
    keep_prob_to_log_alpha,
    l0_penalty,
    l0l2_penalty,
    prob_nonzero,
    prob_one,
    prob_zero,
    uniform_noise,
)
from l0jax._src.regression.estimators import SparseL0Linear, SparseL0Logistic
from l0jax._src.regression.path import L0Path, l0_path, select_lambda
from l0jax._src.schedules import (
    AnnealTemperatureState,
    anneal_temperature,
    constant_temperature,
    current_temperature,
    temperature_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "AnnealTemperatureState",
    "BudgetState",
    "CalibrationPath",
    "CalibrationResult",
    "CalibrationState",
    "CalibrationWarning",
    "CheckpointError",
    "CheckpointWarning",
    "ChunkInfo",
    "ClassicalCalibration",
    "ColumnBlocks",
    "CsvLog",
    "L0Path",
    "NonFiniteLossError",
    "ReplicateCalibration",
    "ReplicateWeights",
    "SparseCalibrationWeights",
    "SparseL0Linear",
    "SparseL0Logistic",
    "SurveyEstimate",
    "TargetDiagnostics",
    "aggregation_matrix",
    "annealed_log_target",
    "anneal_temperature",
    "budget_gap",
    "budget_init",
    "budget_penalty",
    "budget_target",
    "budget_update",
    "calibrate",
    "calibrate_classical",
    "calibrate_path",
    "calibrated_mean",
    "calibrated_total",
    "check_targets",
    "constant_temperature",
    "current_temperature",
    "design_variance",
    "hard_concrete",
    "hard_concrete_eval",
    "hard_concrete_from_uniform",
    "hash_uniform",
    "keep_prob_to_log_alpha",
    "l0_path",
    "l0_penalty",
    "l0l2_penalty",
    "prob_nonzero",
    "prob_one",
    "prob_zero",
    "recalibrate_replicates",
    "replicate_weights",
    "select_lambda",
    "target_diagnostics",
    "temperature_schedule",
    "uniform_noise",
    "weight_summary",
]
