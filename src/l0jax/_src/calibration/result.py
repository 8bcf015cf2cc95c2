"""What a calibration returns."""

from __future__ import annotations

import dataclasses

import numpy as np

from l0jax._src.calibration.losses import LossType
from l0jax._src.calibration.model import CalibrationState


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """The outcome of ``l0jax.calibrate``: NumPy arrays, plus the state to continue from.

    Attributes:
      weights: the returned (deterministic) household weights, shape (n,), float32, >= 0; exactly
        zero for households whose gate closed. After the polish phase these are the refitted
        weights of the active set.
      gates: the deterministic gates, shape (n,) (all ones when ``use_gates=False``).
      active: indices of the households with non-zero weight, shape (k,), int64.
      predictions: ``M @ weights`` in float64, shape (m,).
      targets: the targets, shape (m,), float64.
      history: per-chunk metrics, each an array with one entry per chunk: ``epoch`` (epochs done),
        ``loss`` (mean training loss over the chunk, sampled gates), ``train_data`` (its data
        part), ``data`` (data loss with deterministic gates at the chunk's end),
        ``mean_rel_error``/``max_rel_error`` (of the deterministic weights,
        ``|pred - y| / (|y| + 1)``), ``active`` (deterministic active count),
        ``expected_active`` (sum of P(z != 0)) and ``temperature``.
      state: the final ``CalibrationState`` of the training loop (before polishing); pass it back
        as ``calibrate(..., state=result.state)`` to continue training.
      loss_type: the loss used.
      polish: None when there was no polish phase, else ``{"epochs", "start", "end"}``: its epochs and
        the objective (data + L2 loss, deterministic gates) before and after.
    """

    weights: np.ndarray
    gates: np.ndarray
    active: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray
    history: dict[str, np.ndarray]
    state: CalibrationState
    loss_type: LossType
    polish: dict[str, float] | None = None

    @property
    def active_count(self) -> int:
        """Number of households with non-zero weight."""
        return int(self.active.size)

    @property
    def sparsity(self) -> float:
        """Fraction of households whose weight is exactly zero."""
        return 1.0 - self.active.size / self.weights.size

    @property
    def relative_errors(self) -> np.ndarray:
        """``|prediction - target| / (|target| + 1)`` per target, shape (m,)."""
        return np.abs(self.predictions - self.targets) / (np.abs(self.targets) + 1.0)

    @property
    def relative_loss(self) -> float:
        """Mean of ``((prediction - target) / (|target| + 1))**2`` (the stress test's reported loss)."""
        return float(np.mean(((self.predictions - self.targets) / (np.abs(self.targets) + 1.0)) ** 2))

    def summary(self) -> str:
        """A one-line summary: active households, mean and max relative error, epochs."""
        rel = self.relative_errors
        epochs = int(self.history["epoch"][-1]) if len(self.history["epoch"]) else 0
        return (
            f"{self.active_count:,} of {self.weights.size:,} households active "
            f"({self.sparsity:.1%} sparse); relative error mean {rel.mean():.3%}, max {rel.max():.3%}; "
            f"{epochs} epochs"
        )

    def __repr__(self) -> str:
        return f"CalibrationResult({self.summary()})"
