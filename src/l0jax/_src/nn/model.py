"""Model-wide L0 utilities: penalties, statistics, temperature, pruning.

They walk any Flax NNX model and act on every L0 layer (``L0Linear``, ``L0Conv``,
``L0DepthwiseConv``) and every free-standing ``HardConcreteGate`` (data gates and gates a user
placed in a model). ``l0_penalty``, ``l2_penalty`` and ``set_temperature`` are jittable and are
meant to be called inside the training step; the others read concrete values.

Differences from l0-python 0.6 (bugs fixed):

* ``l2_penalty`` sums squared *weights*: l0-python's ``compute_l2_penalty`` selected parameters
  whose name contains "weight", which includes the gate logits ``weight_gates.qz_logits`` and so
  pulled every gate towards keep probability 1/2.
* ``active_parameter_count`` counts the weights that are non-zero in eval mode, an exact integer;
  l0-python truncated each layer's *expected* count with ``int()`` and summed channels of
  structured convolutions as if they were weights.
* ``sparsity_stats`` reports expected and realised sparsity in the same unit (weights) with the
  totals they refer to; l0-python divided a channel count by a weight count for structured convs.
* ``prune`` handles every layer type (l0-python's ``prune_model`` raised on depthwise layers),
  zeroes the biases of pruned output units, and does not switch the model to eval mode.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from l0jax._src import checks
from l0jax._src.nn.gate import HardConcreteGate
from l0jax._src.nn.layers import L0Layer
from l0jax._src.nn.structured import L0Structured

Array = jax.Array
PenaltyUnit = Literal["parameter", "gate"]
PER_CHOICES: tuple[PenaltyUnit, ...] = get_args(PenaltyUnit)


def path_name(path: tuple) -> str:
    """A module path as a dotted string (``("layers", 0)`` -> ``"layers.0"``; the root is ``""``)."""
    return ".".join(str(p) for p in path)


def l0_layers(model: Any) -> list[tuple[tuple, L0Layer]]:
    """All L0 layers of ``model`` with their paths, in Flax's (sorted) traversal order."""
    if isinstance(model, L0Layer):
        return [((), model)]
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, L0Layer)]


def structured_modules(model: Any) -> list[tuple[tuple, L0Structured]]:
    """All structured gated modules (attention, MLP blocks) of ``model`` with their paths."""
    if isinstance(model, L0Structured):
        return [((), model)]
    if not isinstance(model, nnx.Module):
        return []
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, L0Structured)]


def free_gates(model: Any) -> list[tuple[tuple, HardConcreteGate]]:
    """Gates of ``model`` that belong to no L0 layer or structured module, with their paths."""
    modules = list(nnx.iter_modules(model)) if isinstance(model, nnx.Module) else []
    owned = {id(m.gate) for _, m in modules if isinstance(m, L0Layer)}
    owned |= {id(g) for _, m in modules if isinstance(m, L0Structured) for g in m.gates()}
    return [(p, m) for p, m in modules if isinstance(m, HardConcreteGate) and id(m) not in owned]


def _require_gates(model: Any, what: str) -> tuple[list, list]:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"{what}: model must be a Flax NNX module, got {type(model).__name__}.")
    layers, gates = l0_layers(model), free_gates(model)
    if not layers and not gates and not structured_modules(model):
        raise ValueError(
            f"{what}: the model holds no L0 layers or hard-concrete gates; build it from "
            f"l0jax.nn layers (L0Linear, L0Conv, ...) or gates."
        )
    return layers, gates


def l0_penalty(model: nnx.Module, *, per: PenaltyUnit = "parameter") -> Array:
    """Expected L0 norm of a model: the sum of its layers' and free gates' penalties (eq. 12).

    Args:
      model: a Flax NNX module containing L0 layers and/or gates.
      per: ``"parameter"`` (default) counts expected non-zero weights, each gate weighted by the
        size of the group it switches (the paper's cost); ``"gate"`` counts expected open gates.
        Free gates (data gates) count their gates either way; attention heads and MLP blocks count
        the kernel entries they switch (``L0MultiHeadAttention.expected_size``).

    Returns:
      A float32 scalar, differentiable in every ``log_alpha``.
    """
    checks.check_choice("per", per, PER_CHOICES)
    layers, gates = _require_gates(model, "l0_penalty")
    total = jnp.zeros((), jnp.float32)
    for _, layer in layers:
        total = total + (layer.penalty() if per == "parameter" else layer.gate.penalty())
    for _, gate in gates:
        total = total + gate.penalty()
    for _, module in structured_modules(model):
        total = total + module.expected_size(per)
    return total


def l2_penalty(model: nnx.Module, *, expected: bool = False) -> Array:
    """Sum of squared weights of every ``nnx.Param`` except biases and gate logits.

    Args:
      model: a Flax NNX module.
      expected: if True, the kernels of L0 layers pay only in proportion to the probability
        that their gate is open, ``sum P(z != 0) theta**2`` (the L2 part of eq. 14); other
        weights pay in full either way.

    Returns:
      A float32 scalar (no factor 1/2). Gate ``log_alpha`` values are never included.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"l2_penalty: model must be a Flax NNX module, got {type(model).__name__}.")
    modules = list(nnx.iter_modules(model))
    excluded = {id(m.log_alpha) for _, m in modules if isinstance(m, HardConcreteGate)}
    total = jnp.zeros((), jnp.float32)
    if expected:
        for layer in (m for _, m in modules if isinstance(m, L0Layer)):
            excluded.add(id(layer.kernel))
            total = total + layer.expected_l2()
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param) or id(node) in excluded or (path and path[-1] == "bias"):
            continue
        excluded.add(id(node))  # a parameter shared by two modules is counted once
        w = node[...].astype(jnp.float32)
        total = total + jnp.sum(w * w)
    return total


def set_temperature(model: nnx.Module, temperature: ArrayLike) -> None:
    """Sets the concrete temperature of every gate in ``model`` (in place).

    The temperature is an ``nnx.Variable``, so inside a jitted step a traced value (e.g.
    ``l0jax.current_temperature(optimizer)``) updates state without recompiling.

    Args:
      model: a Flax NNX module.
      temperature: a positive scalar (Python float or array; may be traced).
    """
    checks.check_positive("temperature", temperature, hint="It is the concrete temperature, e.g. 2/3.")
    t = jnp.asarray(temperature)
    if t.shape != ():
        raise ValueError(f"temperature must be a scalar, got shape {t.shape}.")
    t = t.astype(jnp.float32)
    found = False
    for _, m in nnx.iter_modules(model):
        if isinstance(m, HardConcreteGate):
            m.temperature[...] = t
            found = True
    if not found:
        raise ValueError("set_temperature: the model holds no hard-concrete gates.")


@nnx.jit
def _layer_summaries(model: nnx.Module) -> dict[str, Any]:
    """Everything the statistics need, computed in one compiled call (eager op-by-op dispatch would
    compile each small operation separately, which is slow for a many-layer model).
    """
    out = {}
    for path, layer in l0_layers(model):
        kernel, _ = layer.eval_params()
        out[path_name(path)] = {
            "expected_active": layer.penalty(),
            "active": jnp.count_nonzero(kernel),
            "open_gates": jnp.count_nonzero(layer.gate.eval_gates()),
            "expected_open_gates": layer.gate.penalty(),
        }
    for path, gate in free_gates(model):
        n_open = jnp.count_nonzero(gate.eval_gates())
        out[path_name(path)] = {
            "expected_active": gate.penalty(),
            "active": n_open,
            "open_gates": n_open,
            "expected_open_gates": gate.penalty(),
        }
    return out


def sparsity_stats(model: nnx.Module) -> dict[str, dict[str, Any]]:
    """Per-layer sparsity, expected (from gate probabilities) and realised (in eval mode).

    For an L0 layer, "parameters" are its kernel entries; for a free gate, its gates; for an
    attention or MLP block, the kernel entries its gates switch (``open_gates`` counts the open
    gates of every level: heads, dimensions, block).

    Args:
      model: a Flax NNX module.

    Returns:
      A dict from the dotted module path to a dict with keys ``kind`` (class name), ``total``
      (parameters), ``expected_active`` (sum of P(z != 0) x group size), ``active`` (parameters
      non-zero in eval mode), ``expected_sparsity`` = 1 - expected_active / total,
      ``sparsity`` = 1 - active / total, ``gates``, ``open_gates`` (eval gate > 0) and
      ``expected_open_gates``.
    """
    layers, gates = _require_gates(model, "sparsity_stats")
    values = jax.device_get(_layer_summaries(model))
    stats: dict[str, dict[str, Any]] = {}
    for path, module in layers + gates:
        gate = module.gate if isinstance(module, L0Layer) else module
        total = int(np.prod(module.kernel.shape if isinstance(module, L0Layer) else gate.shape))
        v = values[path_name(path)]
        expected, active = float(v["expected_active"]), int(v["active"])
        stats[path_name(path)] = {
            "kind": type(module).__name__,
            "total": total,
            "expected_active": expected,
            "active": active,
            "expected_sparsity": 1.0 - expected / total,
            "sparsity": 1.0 - active / total,
            "gates": int(np.prod(gate.shape)),
            "open_gates": int(v["open_gates"]),
            "expected_open_gates": float(v["expected_open_gates"]),
        }
    for path, module in structured_modules(model):
        total = int(module.full_size("parameter"))
        expected, active = float(module.expected_size("parameter")), module.eval_size()
        stats[path_name(path)] = {
            "kind": type(module).__name__,
            "total": total,
            "expected_active": expected,
            "active": active,
            "expected_sparsity": 1.0 - expected / total,
            "sparsity": 1.0 - active / total,
            "gates": int(module.full_size("gate")),
            "open_gates": sum(int(np.count_nonzero(g.eval_gates())) for g in module.gates()),
            "expected_open_gates": float(module.expected_size("gate")),
        }
    return stats


def active_parameter_count(model: nnx.Module) -> int:
    """Number of gated kernel entries (L0 layers, attention heads, MLP units) in use in eval mode.

    With the default median eval rule a gate is zero in eval mode exactly when
    ``P(z != 0) <= 1/2``, so this is the size of the weights ``prune(model, 0.5)`` keeps.

    Args:
      model: a Flax NNX module with L0 layers.

    Returns:
      An exact integer (l0-python returned a truncated expected count).
    """
    layers, _ = _require_gates(model, "active_parameter_count")
    values = jax.device_get(_layer_summaries(model))
    count = sum(int(values[path_name(path)]["active"]) for path, _ in layers)
    return count + sum(m.eval_size() for _, m in structured_modules(model))


@nnx.jit
def _prune(model: nnx.Module, threshold: Array) -> None:
    for _, layer in l0_layers(model):
        keep = layer.gate.prob_nonzero() > threshold
        kernel = layer.kernel[...]
        layer.kernel[...] = jnp.where(
            jnp.broadcast_to(layer.kernel_view(keep), kernel.shape), kernel, jnp.zeros_like(kernel)
        )
        keep_bias = layer.bias_view(keep)
        if layer.bias is not None and keep_bias is not None:
            bias = layer.bias[...]
            layer.bias[...] = jnp.where(keep_bias, bias, jnp.zeros_like(bias))


def prune(model: nnx.Module, threshold: float = 0.05) -> nnx.Module:
    """Zeroes (in place) every weight whose gate has ``P(z != 0) <= threshold``.

    For output-gated layers (``gate="output"``, structured and depthwise convolutions) the
    biases of the pruned units are zeroed too, so those units output exactly zero. The gates
    themselves are left as they are. With the median eval rule, ``threshold=0.5`` zeroes exactly
    what eval mode already closes.

    Args:
      model: a Flax NNX module with L0 layers.
      threshold: probability in [0, 1); l0-python's default 0.05.

    Returns:
      ``model`` (modified in place), for chaining.
    """
    checks.check_threshold(threshold)
    _require_gates(model, "prune")
    # The threshold is rounded to the gates' float32 so that "at or below" compares like with like.
    _prune(model, jnp.asarray(threshold, jnp.float32))
    return model
