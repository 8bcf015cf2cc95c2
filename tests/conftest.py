"""Test configuration: strict dtype and rank promotion, so silent upcasts and broadcasts fail.

optax's Adam computes ``decay ** count`` with an int32 count, which strict dtype promotion rejects
inside optax itself. Tests that run an optax optimizer use the ``optax_promotion`` fixture, which
relaxes dtype promotion (only) to "standard" for that test; rank promotion stays "raise".
"""

import os

import jax
import pytest

# The sharded tests need several devices, which XLA fixes when jax starts: tests/calibration/test_multidevice.py
# runs them in a subprocess with emulated CPU devices; this process (one device) skips the folder.
collect_ignore = [] if os.environ.get("L0JAX_MULTIDEVICE") else ["calibration/multidevice"]

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def optax_promotion():
    with jax.numpy_dtype_promotion("standard"):
        yield
