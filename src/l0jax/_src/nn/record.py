"""Reads the positions (tokens, output pixels) each gated module handles per example.

FLOPs per example depend on how often a layer's kernel is applied to one example: once for a
``(batch, features)`` input, once per token for ``(batch, length, features)``, once per output
pixel for a convolution. Those counts are static shapes, known while the model runs; ``positions``
runs the model once on an example batch and collects them, keyed by module path, so that the
expected FLOPs can later be computed inside a jitted step without running the model.
"""

from __future__ import annotations

import contextvars
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx

SizeUnit = Literal["parameter", "gate", "flops"]
"""What a size counts: parameters, gates, or FLOPs per example."""

_RECORDER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("l0jax_positions", default=None)


def note(module: Any, positions: Any) -> None:
    """Records ``positions`` for ``module`` when ``positions(...)`` is collecting (a no-op otherwise)."""
    rec = _RECORDER.get()
    if rec is not None:
        rec[id(module)] = positions


def output_positions(y: Any) -> int:
    """Times a kernel was applied per example: the product of the axes between batch and features."""
    shape = np.shape(y)
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def positions(model: nnx.Module, example: Any, **kwargs: Any) -> dict[str, Any]:
    """Runs ``model(example, **kwargs)`` (shapes only) in eval mode and returns positions by module path.

    Args:
      model: a Flax NNX module.
      example: one input batch (its values are not used; only shapes matter).
      **kwargs: further keyword arguments of the model's call.

    Returns:
      A dict from the dotted path of each gated module to its positions per example.
    """
    graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
    rec: dict = {}
    names: dict = {}

    def run(state, x):
        # The merged modules are new objects: their ids are mapped to paths through the merged graph.
        merged = nnx.merge(graphdef, state)
        names.update({id(m): ".".join(str(p) for p in path) for path, m in nnx.iter_modules(merged)})
        return merged(x, **kwargs)

    token = _RECORDER.set(rec)
    try:
        jax.eval_shape(run, state, example)  # shapes only: nothing is computed
    finally:
        _RECORDER.reset(token)
    return {names[k]: v for k, v in rec.items() if k in names}
