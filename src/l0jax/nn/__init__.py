"""Flax NNX layers with hard-concrete L0 gates (Louizos, Welling & Kingma 2018).

Gates and layers train under ``nnx.jit`` with ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; the
gate temperature is a non-trainable variable, so ``set_temperature`` never recompiles. Model-wide
utilities compute penalties and statistics, prune, and compress a trained model into a smaller
dense one.
"""

from l0jax._src.nn.compress import CompressedConv
from l0jax._src.nn.compress import CompressedLinear
from l0jax._src.nn.compress import compress
from l0jax._src.nn.data_gates import FeatureGate
from l0jax._src.nn.data_gates import HybridGate
from l0jax._src.nn.data_gates import L0Gate
from l0jax._src.nn.data_gates import SampleGate
from l0jax._src.nn.gate import HardConcreteGate
from l0jax._src.nn.gate import Temperature
from l0jax._src.nn.layers import L0Conv
from l0jax._src.nn.layers import L0DepthwiseConv
from l0jax._src.nn.layers import L0Layer
from l0jax._src.nn.layers import L0Linear
from l0jax._src.nn.layers import SparseMLP
from l0jax._src.nn.model import active_parameter_count
from l0jax._src.nn.model import l0_penalty
from l0jax._src.nn.model import l2_penalty
from l0jax._src.nn.model import prune
from l0jax._src.nn.model import set_temperature
from l0jax._src.nn.model import sparsity_stats

__all__ = [
    "CompressedConv",
    "CompressedLinear",
    "FeatureGate",
    "HardConcreteGate",
    "HybridGate",
    "L0Conv",
    "L0DepthwiseConv",
    "L0Gate",
    "L0Layer",
    "L0Linear",
    "SampleGate",
    "SparseMLP",
    "Temperature",
    "active_parameter_count",
    "compress",
    "l0_penalty",
    "l2_penalty",
    "prune",
    "set_temperature",
    "sparsity_stats",
]
