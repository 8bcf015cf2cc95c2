"""Model size under the gates (parameters, gates, FLOPs per example) and the ``SizeBudget`` controller.

Expected FLOPs follow the paper's counting (Louizos et al. 2018, and its code): each layer counts
its own gates only; a kernel entry costs one multiply and one add each time the kernel is applied
(the bias add taking the place of the last add of each output), so a gated layer costs
``2 x positions x E[open kernel entries]`` FLOPs per example, where ``positions`` is how many times
the kernel is applied to one example: 1 for a ``(batch, features)`` dense input, the number of
tokens for ``(batch, length, features)``, the number of output pixels for a convolution. For an
input-gated dense layer this is the paper's ``(2 E[n_in] - 1) n_out + n_out``; for a convolution
with one gate per output channel ``E[n_out] x positions x (2 k - 1 + 1)`` with ``k`` the kernel
entries of one filter. Attention heads and MLP blocks are counted as described in
``l0jax.nn.L0MultiHeadAttention``. Activations, pooling, normalisation and the softmax are not
counted; data gates (``FeatureGate``, ``SampleGate``) count no FLOPs.
"""

from __future__ import annotations

from typing import Any, get_args

import jax
import jax.numpy as jnp
from flax import nnx

from l0jax._src import budget as core
from l0jax._src import checks
from l0jax._src.nn import record
from l0jax._src.nn.model import free_gates, l0_layers, path_name, structured_modules
from l0jax._src.nn.record import SizeUnit

Array = jax.Array
PER: tuple[SizeUnit, ...] = get_args(SizeUnit)


def _check_per(per: Any) -> None:
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(repr(p) for p in PER)}, got {per!r}.")


def _gated_modules(model: nnx.Module) -> tuple[list, list, list]:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a Flax NNX module, got {type(model).__name__}.")
    layers, structured, gates = l0_layers(model), structured_modules(model), free_gates(model)
    if not (layers or structured or gates):
        raise ValueError(
            "model holds no L0 layers or gates: build it from l0jax.nn layers (L0Linear, L0Conv, "
            "L0MultiHeadAttention, L0MLPBlock, ...)."
        )
    return layers, structured, gates


def _pos(positions: dict | None, path: tuple, module: Any) -> Any:
    name = path_name(path)
    if positions is None or name not in positions:
        raise ValueError(
            f"FLOPs of {type(module).__name__} {name!r} need its positions per example: pass "
            f"example= (one input batch) so that they can be read from the model's shapes."
        )
    return positions[name]


def expected_size(model: nnx.Module, per: SizeUnit = "parameter", *, positions: dict | None = None) -> Array:
    """Expected size of a model under its gates: kernel entries, open gates or FLOPs per example.

    Jittable and differentiable in every gate logit (use it inside the training step).

    Args:
      model: a Flax NNX module with L0 layers, structured modules or gates.
      per: ``"parameter"`` (expected non-zero kernel entries), ``"gate"`` (expected open gates) or
        ``"flops"`` (expected FLOPs per example, see the module docstring).
      positions: for ``"flops"``: the positions per example of each gated module, from
        ``layer_positions(model, example)``.

    Returns:
      A float32 scalar.
    """
    _check_per(per)
    layers, structured, gates = _gated_modules(model)
    total = jnp.zeros((), jnp.float32)
    for path, layer in layers:
        if per == "parameter":
            total = total + layer.penalty()
        elif per == "gate":
            total = total + layer.gate.penalty()
        else:
            total = total + 2.0 * float(_pos(positions, path, layer)) * layer.penalty()
    for path, module in structured:
        pos = _pos(positions, path, module) if per == "flops" else None
        total = total + module.expected_size(per, pos)
    if per != "flops":
        for _, gate in gates:
            total = total + gate.penalty()
    return total


def full_size(model: nnx.Module, per: SizeUnit = "parameter", *, positions: dict | None = None) -> float:
    """The size of a model with every gate open, in the units of ``expected_size``.

    Args:
      model: a Flax NNX module with L0 layers, structured modules or gates.
      per: ``"parameter"``, ``"gate"`` or ``"flops"``.
      positions: for ``"flops"``: from ``layer_positions(model, example)``.

    Returns:
      A Python float.

    Example:
      >>> from flax import nnx
      >>> from l0jax.nn import SparseMLP, full_size
      >>> mlp = SparseMLP((784, 300, 100, 10), gate="input", rngs=nnx.Rngs(0))
      >>> full_size(mlp), full_size(mlp, "gate")
      (266200.0, 1184.0)
    """
    _check_per(per)
    layers, structured, gates = _gated_modules(model)
    total = 0.0
    for path, layer in layers:
        size = float(layer.kernel.size) if per != "gate" else float(layer.gate.log_alpha.size)
        total += 2.0 * float(_pos(positions, path, layer)) * size if per == "flops" else size
    for path, module in structured:
        pos = _pos(positions, path, module) if per == "flops" else None
        total += module.full_size(per, pos)
    if per != "flops":
        total += float(sum(g.log_alpha.size for _, g in gates))
    return total


def layer_positions(model: nnx.Module, example: Any, **kwargs: Any) -> dict[str, Any]:
    """How many times each gated module applies its kernel to one example (for FLOPs).

    The model is traced once on ``example`` (shapes only, nothing is computed).

    Args:
      model: a Flax NNX module.
      example: an input batch of the model, e.g. ``x[:1]``.
      **kwargs: further keyword arguments of the model's call.

    Returns:
      A dict from module path to positions: an int (tokens or output pixels per example), or
      ``(L, S)`` (query and key lengths) for attention.
    """
    return record.positions(model, example, **kwargs)


def expected_flops(model: nnx.Module, example: Any, **kwargs: Any) -> Array:
    """Expected FLOPs per example under the gates (the paper's counting; see the module docstring).

    Args:
      model: a Flax NNX module with gated layers.
      example: an input batch of the model (only its shape is used).
      **kwargs: further keyword arguments of the model's call.

    Returns:
      A float32 scalar, differentiable in the gate logits.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from l0jax.nn import SparseMLP, expected_flops
      >>> mlp = SparseMLP((784, 300, 100, 10), gate="input", init_keep_prob=0.999, rngs=nnx.Rngs(0))
      >>> flops = float(expected_flops(mlp, jnp.zeros((1, 784))))
      >>> round(flops / (2 * 266_200), 3)     # gates (almost surely) open: 2 FLOPs per weight
      1.0
    """
    return expected_size(model, "flops", positions=layer_positions(model, example, **kwargs))


class BudgetVariable(nnx.Variable):
    """State of a ``SizeBudget`` (multipliers, step, target): not a parameter, never differentiated."""


class SizeBudget(nnx.Module):
    """Prune a Flax NNX model to a target size, with no lambda to choose (CoFi's Lagrangian).

    Adds ``lambda1 * g + lambda2 * g**2`` with ``g = (E - T) / T`` to the loss, ``E`` the model's
    expected size and ``T`` the target, and raises or lowers the multipliers by dual ascent after
    each step (``l0jax.budget_update``). The target and the multipliers are state (``nnx.Variable``,
    not ``nnx.Param``): ``nnx.Optimizer(..., wrt=nnx.Param)`` leaves them alone, and changing the
    target (``set_target``) never recompiles a jitted step.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from l0jax import nn as ln
      >>> model = ln.SparseMLP((8, 32, 2), gate="input", rngs=nnx.Rngs(0))
      >>> budget = ln.SizeBudget(model, target=0.5 * ln.full_size(model), warmup=100)
      >>> opt = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
      >>> @nnx.jit
      ... def step(model, opt, budget, x, y):
      ...     def loss_fn(model):
      ...         size = budget.expected(model)
      ...         return jnp.mean((model(x) - y) ** 2) + budget.penalty(size), size
      ...     (loss, size), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
      ...     opt.update(model, grads)
      ...     budget.update(size)
      ...     return loss
      >>> loss = step(model, opt, budget, jnp.ones((4, 8)), jnp.zeros((4, 2)))
      >>> int(budget.step[...])
      1

    Args:
      model: the model to prune (read for its size and, for FLOPs, its shapes; not stored).
      target: the target size, in (0, total] where total = ``full_size(model, per)``.
      per: ``"parameter"`` (kernel entries), ``"gate"`` (gates) or ``"flops"`` (FLOPs per example,
        needs ``example``).
      example: an input batch, for ``per="flops"`` (only its shape is used).
      rate: the multipliers' ascent step per unit of relative gap.
      warmup: steps over which the target falls geometrically from total to ``target``.
    """

    def __init__(
        self,
        model: nnx.Module,
        target: float,
        per: SizeUnit = "parameter",
        *,
        example: Any = None,
        rate: float = 1.0,
        warmup: int = 0,
    ):
        _check_per(per)
        if per == "flops" and example is None:
            raise ValueError("per='flops' needs example= (an input batch of the model) to read its shapes.")
        checks.check_positive("rate", rate)
        checks.check_nonnegative("warmup", warmup)
        self.per: SizeUnit = per
        positions = layer_positions(model, example) if per == "flops" else None
        # Kept as a tuple: static attributes of an NNX module must be hashable.
        self.positions = None if positions is None else tuple(sorted(positions.items()))
        self.total = full_size(model, per, positions=positions)
        core.check_target(target, self.total)
        state = core.budget_init()
        self.lambda1 = BudgetVariable(state.lambda1)
        self.lambda2 = BudgetVariable(state.lambda2)
        self.step = BudgetVariable(state.step)
        self.target = BudgetVariable(jnp.asarray(target, jnp.float32))
        self.rate = BudgetVariable(jnp.asarray(rate, jnp.float32))
        self.warmup = BudgetVariable(jnp.asarray(warmup, jnp.float32))

    @property
    def state(self) -> core.BudgetState:
        """The multipliers and step as an ``l0jax.BudgetState``."""
        return core.BudgetState(self.lambda1[...], self.lambda2[...], self.step[...])

    def set_target(self, target: float) -> None:
        """Changes the target (no recompilation; the multipliers carry on from where they are).

        Args:
          target: the new target, in (0, total].
        """
        core.check_target(target, self.total)
        self.target[...] = jnp.asarray(target, jnp.float32)

    def expected(self, model: nnx.Module) -> Array:
        """The model's expected size in the budget's unit (jittable, differentiable)."""
        positions = None if self.positions is None else dict(self.positions)
        return expected_size(model, self.per, positions=positions)

    def target_now(self) -> Array:
        """The target in force at this step (after the warm-up: ``target``)."""
        return core.budget_target(self.state, self.target[...], total=self.total, warmup=self.warmup[...])

    def penalty(self, expected: Array) -> Array:
        """The Lagrangian term to add to the loss, for the expected size ``expected`` (from ``expected``)."""
        return core.budget_penalty(
            self.state, expected, self.target[...], total=self.total, warmup=self.warmup[...]
        )

    def update(self, expected: Array) -> None:
        """One dual-ascent step of the multipliers (call once per training step)."""
        new = core.budget_update(
            self.state,
            expected,
            self.target[...],
            total=self.total,
            rate=self.rate[...],
            warmup=self.warmup[...],
        )
        self.lambda1[...], self.lambda2[...], self.step[...] = new.lambda1, new.lambda2, new.step
