"""Production options of a calibration, wired into ``calibrate`` and ``SparseCalibrationWeights.fit``.

``calibrate`` hands these options to a ``Run``, which

* adds the extra objective terms and the keep-K budget to the ``Problem`` (``distance``,
  ``hierarchy``, ``dual``);
* on ``resume=True`` loads the checkpoint into the fresh state (``checkpoint``), checks that it was
  made for the same matrix and targets, warns about changed hyperparameters, and says how many
  epochs remain;
* supplies the fit's per-chunk callback: periodic checkpoints, the user's callbacks (each given a
  ``ChunkInfo``), and early stopping on ``tol``;
* joins the history of a resumed run to the history saved in its checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks
from l0jax._src import hard_concrete as hc
from l0jax._src.calibration import checkpoint as ckpt
from l0jax._src.calibration import dual, engine, hierarchy, model
from l0jax._src.calibration.distance import DISTANCES, Distance, distance_term
from l0jax._src.calibration.sharding import fetch

Array = jax.Array

# Early stopping (tol=) in keep-K mode also waits until the training's active count is within this
# fraction of K; the final snap then keeps exactly K whatever the count was.
TARGET_ACTIVE_BAND = 0.05
# Keep-K's budget falls from n to K over this fraction of the epochs, then holds K: early epochs
# fit the targets with most households open, the rest close gates gradually.
TARGET_ACTIVE_ANNEAL = 0.5
# Hyperparameters that may change on resume (with a warning), and settings that may not.
_MAY_CHANGE = (
    "lr",
    "lambda_l0",
    "lambda_l2",
    "temperature",
    "distance_strength",
    "aggregate_lambdas",
    "target_active",
    "target_active_rate",
)
_MUST_MATCH = ("loss_type", "use_gates", "distance", "eval_rule", "aggregates", "weight_bounds")


class CheckpointWarning(UserWarning):
    """Resuming with hyperparameters that differ from the checkpoint's (the run is then not bitwise the same)."""


@dataclasses.dataclass(frozen=True)
class ProductionOptions:
    """The production options of ``calibrate`` (see its docstring for each)."""

    target_active: int | float | None = None
    target_active_rate: float = 0.05
    distance: Distance | None = None
    distance_strength: float = 1e-3
    aggregates: Any = None
    tol: float | None = None
    callbacks: Sequence[Callable[..., Any]] = ()
    checkpoint_path: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        # Any sequence of callbacks (a list, typically) is kept as a tuple: the options stay hashable
        # and comparable, and the caller's list may change afterwards without changing the run.
        object.__setattr__(self, "callbacks", tuple(self.callbacks))

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> ProductionOptions:
        """The options among a function's arguments, taken by name.

        ``calibrate`` and ``SparseCalibrationWeights.fit`` take every option as a keyword argument
        of the same name and pass their ``locals()`` here.

        Args:
          arguments: a mapping holding at least every field of ``ProductionOptions``.

        Returns:
          The options.
        """
        return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)})

    def active(self) -> bool:
        """Whether any option is set (otherwise the plain fit runs untouched)."""
        return self != ProductionOptions()


def check_options(opts: ProductionOptions, *, use_gates: bool) -> None:
    """Cheap checks of the options, before the matrix is touched; raises ValueError naming the argument."""
    if opts.target_active is not None:
        if not use_gates:
            raise ValueError(
                "target_active needs gates (use_gates=True): without gates every household is kept."
            )
        checks.check_positive(
            "target_active_rate",
            opts.target_active_rate,
            hint="It is the dual-ascent step of the budget's multiplier, e.g. 0.05.",
        )
    if opts.distance is not None:
        checks.check_choice("distance", opts.distance, DISTANCES)
        checks.check_nonnegative("distance_strength", opts.distance_strength)
    if opts.tol is not None:
        checks.check_positive(
            "tol", opts.tol, hint="It is the largest relative error at which the fit may stop, e.g. 1e-3."
        )
    for i, cb in enumerate(opts.callbacks):
        if not callable(cb):
            raise ValueError(
                f"callbacks[{i}] must be callable (called with a ChunkInfo), got {type(cb).__name__}."
            )
    if opts.checkpoint_every is not None:
        checks.check_int_at_least("checkpoint_every", opts.checkpoint_every, 1)
        if opts.checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path (the file to write).")
    if opts.resume and opts.checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the checkpoint to continue from).")
    if opts.checkpoint_path is not None:
        path = Path(opts.checkpoint_path)
        if not path.parent.is_dir():
            raise ValueError(
                f"checkpoint_path {path}: the folder {path.parent} does not exist; create it first."
            )
        if path.exists() and not opts.resume:
            raise ckpt.CheckpointError(
                f"checkpoint_path {path} already holds a checkpoint; pass resume=True to continue that run, or "
                f"remove the file (or choose another path) to start a new one. It was not overwritten."
            )


@dataclasses.dataclass
class ChunkInfo:
    """What a callback receives at the end of each chunk of epochs.

    ``state`` is the ``CalibrationState`` after this chunk (unpadded and on the default device in a
    sharded run, as ``result.state``; gathered when first read). In a multi-process run the
    callbacks run on every process, and ``state`` and ``predictions()`` gather values from every
    process: use them on all processes alike.

    Attributes:
      epoch: epochs done so far.
      row: the chunk's history row (``loss``, ``mean_rel_error``, ``max_rel_error``, ``active``,
        ``temperature``, ...; see ``CalibrationResult.history``).
      targets: the targets, shape (m,).
    """

    epoch: int
    row: dict[str, float]
    targets: np.ndarray
    _predict: Callable[[], np.ndarray]
    _state: model.CalibrationState
    _plain: Callable[[model.CalibrationState], model.CalibrationState] = lambda state: state
    _cache: np.ndarray | None = None

    @functools.cached_property
    def state(self) -> model.CalibrationState:
        """The ``CalibrationState`` after this chunk."""
        return self._plain(self._state)

    def predictions(self) -> np.ndarray:
        """``M @ w`` for the deterministic weights of this state (before any polish), shape (m,)."""
        if self._cache is None:
            self._cache = np.asarray(self._predict(), np.float64)
        return self._cache


def _predict_impl(config: engine.StepConfig, state: model.CalibrationState, problem: model.Problem) -> Array:
    temperature = engine.current_temperature(state.opt_state)
    gates = model.deterministic_gates(
        state.params, temperature, state.hparams, config.eval_rule, bounds=problem.bounds, mask=problem.mask
    )
    return problem.op.matvec(model.gated_weights(state.params["log_weight"], gates, problem.bounds))


_predict = jax.jit(_predict_impl, static_argnums=0)


class Run:
    """One calibration's production machinery (built by ``calibrate``; not a public class).

    Args:
      opts: the options.
      M: the matrix as given (for the fingerprint).
      targets: the targets, shape (m,), float64.
      n: number of households.
      init_weights: the ``init_weights`` argument (design weights for the distance).
      settings: the run's hyperparameters (JSON-serialisable), saved in checkpoints.
      layout: the ``sharding.Layout`` of a sharded run (the fit's states are padded and split over
        its mesh; checkpoints, callbacks and the keep-K snap see them unpadded), or None.
      fingerprint: the problem's fingerprint when already known (a sharded run hashes its blocks
        as it builds them); computed from ``M`` when None.
    """

    def __init__(
        self,
        opts: ProductionOptions,
        *,
        M: Any,
        targets: np.ndarray,
        n: int,
        init_weights: ArrayLike | None,
        settings: dict[str, Any],
        dtype: DTypeLike = jnp.float32,
        layout: Any = None,
        fingerprint: str | None = None,
    ):
        self.opts = opts
        # Checked and built first: their errors name the argument before any other work.
        self.aggregate_terms = hierarchy.aggregate_terms(opts.aggregates, targets.size, dtype)
        self.targets = targets
        self.n = n
        self.init_weights = init_weights
        self.k = None if opts.target_active is None else dual.resolve_target_active(opts.target_active, n)
        self.settings = dict(
            settings,
            target_active=self.k,
            target_active_rate=opts.target_active_rate,
            distance=opts.distance,
            distance_strength=opts.distance_strength if opts.distance else None,
            aggregates=len(self.aggregate_terms),
            aggregate_lambdas=[float(t.strength) for t in self.aggregate_terms],
        )
        self.layout = layout
        self.fingerprint = None
        if opts.checkpoint_path is not None:
            self.fingerprint = fingerprint if fingerprint is not None else ckpt.fingerprint(M, targets)
        self.prior_history: dict[str, list[float]] = {}
        self._next_checkpoint = 0
        self._every: int | None = None
        self._last_saved = -1
        self._rows: list[dict[str, float]] = []

    # -- problem ---------------------------------------------------------------------------

    def extend_problem(self, problem: model.Problem) -> model.Problem:
        """Adds the distance and aggregate terms and the keep-K budget."""
        dt = problem.targets.dtype
        terms = list(problem.terms)
        if self.opts.distance is not None:
            terms.append(
                distance_term(self.opts.distance, self.init_weights, self.n, self.opts.distance_strength, dt)
            )
        terms.extend(self.aggregate_terms)
        budget = None
        if self.k is not None:
            budget = dual.make_budget(
                self.k,
                rate=self.opts.target_active_rate,
                anneal=TARGET_ACTIVE_ANNEAL * self.settings["epochs"],
            )
        return problem._replace(terms=tuple(terms), budget=budget)

    # -- resume ----------------------------------------------------------------------------

    def prepare(self, state: model.CalibrationState) -> model.CalibrationState:
        """Gives the state a keep-K controller state when the budget needs one and it has none."""
        if self.k is not None and state.dual is None:
            state = state._replace(dual=dual.init_dual())
        return state

    def resume(
        self, fresh: model.CalibrationState, *, lr: float, temperature: float | None
    ) -> model.CalibrationState:
        """The state to start from: the checkpoint's when resuming (and one exists), else ``fresh``."""
        opts = self.opts
        fresh = self.prepare(fresh)
        start = fresh
        # (resume=True without a checkpoint_path was refused by the option checks.)
        if opts.resume and opts.checkpoint_path is not None and Path(opts.checkpoint_path).exists():
            state, header = ckpt.load_checkpoint(opts.checkpoint_path, fresh, fingerprint=self.fingerprint)
            old = dict(header.get("settings", {}))
            if "beta" in old:  # checkpoints of earlier versions called the temperature beta
                old.setdefault("temperature", old.pop("beta"))
            for key in _MUST_MATCH:
                if key in old and old[key] != self.settings.get(key):
                    raise ckpt.CheckpointError(
                        f"checkpoint {opts.checkpoint_path} was made with {key}={old[key]!r}, this run has "
                        f"{key}={self.settings.get(key)!r}; resume with the same {key}, or start a new run."
                    )
            changed = [
                f"{k}={self.settings.get(k)!r} (checkpoint: {old[k]!r})"
                for k in _MAY_CHANGE
                if k in old and old[k] != self.settings.get(k)
            ]
            if changed:
                warnings.warn(
                    f"resuming {opts.checkpoint_path} with changed settings: {', '.join(changed)}; the new "
                    f"values apply from epoch {int(state.step)} on, so the run will differ from an "
                    f"uninterrupted one.",
                    CheckpointWarning,
                    stacklevel=4,
                )
            opt_state = engine.set_learning_rate(state.opt_state, lr)
            if temperature is not None:
                opt_state = engine.set_temperature(opt_state, temperature)
            start = state._replace(opt_state=opt_state, hparams=fresh.hparams)
            self.prior_history = {k: list(v) for k, v in header.get("history", {}).items()}
        elif opts.resume:
            warnings.warn(
                f"resume=True but there is no checkpoint at {opts.checkpoint_path} yet; starting a new run.",
                CheckpointWarning,
                stacklevel=4,
            )
        # A resumed state was saved already; a fresh one needs no checkpoint before its first chunk.
        self._last_saved = int(start.step)
        self._every = opts.checkpoint_every
        if self._every is not None:
            self._next_checkpoint = (int(start.step) // self._every + 1) * self._every
        return start

    def snap(self, state: model.CalibrationState, config: engine.StepConfig) -> model.CalibrationState:
        """Keep-K mode: the multiplier's final value, opening exactly the K gates with the largest logits.

        Applied after training (and after its final checkpoint), before the polish; a no-op outside
        keep-K mode and when the K-th and (K+1)-th logits tie.
        """
        if self.k is None or "log_alpha" not in state.params:
            return state
        hp = state.hparams
        temperature = float(engine.current_temperature(state.opt_state))
        threshold = dual.open_threshold(temperature, float(hp.gamma), float(hp.zeta), config.eval_rule)
        la = state.params["log_alpha"]
        # The top K of all households, on the host (a sharded run's logits gathered, padding dropped).
        host = np.asarray(la) if self.layout is None else self.layout.unpad(la)
        shift = dual.snap_to_budget(host, self.k, threshold)
        if shift is None:
            return state
        snapped = jnp.asarray(host) - jnp.asarray(shift, la.dtype)
        gates = np.asarray(
            hc.hard_concrete_eval(snapped, temperature, gamma=hp.gamma, zeta=hp.zeta, rule=config.eval_rule)
        )
        if int(np.count_nonzero(gates > 0)) != self.k:  # rounding at the threshold: keep the fit's own count
            return state
        if self.layout is not None:
            snapped = la - jnp.asarray(shift, la.dtype)  # the same elementwise shift, on the mesh
        return state._replace(params={**state.params, "log_alpha": snapped})

    def remaining(self, state: model.CalibrationState, epochs: int, continuing: bool) -> int:
        """Epochs left: ``epochs`` more when continuing a given state, else up to ``epochs`` in total."""
        if continuing or not self.opts.resume:
            return epochs
        return max(0, epochs - int(state.step))

    # -- callbacks -------------------------------------------------------------------------

    def start(self, config: engine.StepConfig, problem: model.Problem, state: model.CalibrationState) -> None:
        """Calls ``on_start(step)`` of callbacks that have it (e.g. ``CsvLog``) before the first chunk."""
        self._config, self._problem = config, problem
        for cb in self.opts.callbacks:
            if hasattr(cb, "on_start"):
                cb.on_start(int(state.step))

    def _plain(self, state: model.CalibrationState) -> model.CalibrationState:
        """The state without a sharded run's padding, on the default device (layout-independent)."""
        return state if self.layout is None else self.layout.unplace(state)

    def _save(self, state: model.CalibrationState) -> None:
        history = {k: list(v) for k, v in self.prior_history.items()}
        for row in self._rows:
            for k in engine.HISTORY_KEYS:
                history.setdefault(k, []).append(float(row[k]))
        plain = self._plain(state)  # every process takes part in gathering a sharded state
        path, fingerprint = self.opts.checkpoint_path, self.fingerprint
        assert (
            path is not None and fingerprint is not None
        )  # saved only with a checkpoint_path, which sets both
        if jax.process_index() == 0:  # one file per run, written by the first process
            ckpt.save_checkpoint(
                path,
                plain,
                fingerprint=fingerprint,
                settings=self.settings,
                history=history,
            )
        self._last_saved = int(state.step)

    def callback(self, state: model.CalibrationState, row: dict[str, float]) -> bool:
        """The engine's per-chunk hook: checkpoint, user callbacks, early stopping. True stops the fit."""
        self._rows.append(dict(row))
        epoch = int(row["epoch"])
        if self.opts.checkpoint_path is not None and (self._every is None or epoch >= self._next_checkpoint):
            self._save(state)
            if self._every is not None:
                self._next_checkpoint = (epoch // self._every + 1) * self._every
        stop = False
        if self.opts.callbacks:
            info = ChunkInfo(
                epoch=epoch,
                row=dict(row),
                targets=self.targets,
                _predict=lambda: fetch(self._predict_now(state)),
                _state=state,
                _plain=self._plain,
            )
            for cb in self.opts.callbacks:
                stop = bool(cb(info)) or stop
        if self.opts.tol is not None and row["max_rel_error"] <= self.opts.tol:
            stop = stop or self.k is None or abs(row["active"] - self.k) <= TARGET_ACTIVE_BAND * self.k
        return stop

    def _predict_now(self, state: model.CalibrationState) -> Array:
        with jax.numpy_dtype_promotion("standard"):
            return _predict(self._config, state, self._problem)

    def finish(self, state: model.CalibrationState, history: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Writes the final state (if not yet saved) and returns the whole history (checkpoint's + this run's)."""
        if self.opts.checkpoint_path is not None and self._last_saved != int(state.step):
            self._save(state)
        if not self.prior_history:
            return history
        out = {}
        for k in engine.HISTORY_KEYS:
            prior = np.asarray(self.prior_history.get(k, []))
            out[k] = np.concatenate([prior.astype(history[k].dtype) if prior.size else prior, history[k]])
        return out


def empty_history() -> dict[str, np.ndarray]:
    """A history with no chunks (a resumed run that had already done all its epochs)."""
    return {k: np.asarray([]) for k in engine.HISTORY_KEYS}


def settings_of(**kw: Any) -> dict[str, Any]:
    """The JSON-serialisable hyperparameters of a run, as saved in checkpoints."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, (bool, int, str)) or v is None:
            out[k] = v
        elif isinstance(v, float) or isinstance(v, np.floating):
            out[k] = float(v)
        else:
            out[k] = repr(v) if not callable(v) else "callable"
    return out
