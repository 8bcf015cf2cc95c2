"""Shared inputs of the Flax NNX tests, drawn by NumPy from fixed seeds."""

import jax.numpy as jnp
import numpy as np


def normal(seed, shape):
    """Test inputs from NumPy (a jax.random draw would compile once per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def np_init(key, shape, dtype=jnp.float32):
    """N(0, 1/fan_in) weights drawn by NumPy from a fixed seed: unlike jax.random initialisers it
    compiles nothing per shape, which keeps these tests fast.
    """
    del key
    rng = np.random.default_rng(int(np.prod(shape)))
    return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(shape[:-1])))), shape), dtype)
