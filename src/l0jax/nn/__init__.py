"""Flax NNX layers with hard-concrete L0 gates (Louizos, Welling & Kingma 2018).

Gates and layers train under ``nnx.jit`` with ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; the
gate temperature is a non-trainable variable, so ``set_temperature`` never recompiles. Model-wide
utilities compute penalties and statistics, prune, and compress a trained model into a smaller
dense one. Attention heads, MLP widths and whole blocks get gates of their own
(``L0MultiHeadAttention``, ``L0MLPBlock``), and ``SizeBudget`` prunes to a target number of
parameters, gates or FLOPs without a lambda to choose.
"""

from l0jax._src.nn.compress import CompressedConv, CompressedLinear, compress
from l0jax._src.nn.data_gates import FeatureGate, HybridGate, L0Gate, SampleGate
from l0jax._src.nn.gate import GateConfig, HardConcreteGate, Temperature
from l0jax._src.nn.layers import L0Conv, L0DepthwiseConv, L0Layer, L0Linear, SparseMLP
from l0jax._src.nn.model import (
    active_parameter_count,
    l0_penalty,
    l2_penalty,
    prune,
    set_temperature,
    sparsity_stats,
)
from l0jax._src.nn.sizing import (
    BudgetVariable,
    SizeBudget,
    expected_flops,
    expected_size,
    full_size,
    layer_positions,
)
from l0jax._src.nn.structured import (
    CompressedMLPBlock,
    CompressedMultiHeadAttention,
    L0MLPBlock,
    L0MultiHeadAttention,
    L0Structured,
)

__all__ = [
    "BudgetVariable",
    "CompressedConv",
    "CompressedMLPBlock",
    "CompressedMultiHeadAttention",
    "CompressedLinear",
    "FeatureGate",
    "GateConfig",
    "HardConcreteGate",
    "HybridGate",
    "L0Conv",
    "L0DepthwiseConv",
    "L0Gate",
    "L0Layer",
    "L0Linear",
    "L0MLPBlock",
    "L0MultiHeadAttention",
    "L0Structured",
    "SampleGate",
    "SizeBudget",
    "SparseMLP",
    "Temperature",
    "active_parameter_count",
    "compress",
    "expected_flops",
    "expected_size",
    "full_size",
    "l0_penalty",
    "l2_penalty",
    "layer_positions",
    "prune",
    "set_temperature",
    "sparsity_stats",
]
