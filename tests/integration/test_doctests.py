"""The docstring examples of the core and l0jax.nn modules run and print what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "l0jax._src.hard_concrete",
    "l0jax._src.schedules",
    "l0jax._src.nn.gate",
    "l0jax._src.nn.layers",
    "l0jax._src.nn.data_gates",
    "l0jax._src.nn.compress",
    "l0jax._src.nn.structured",
    "l0jax._src.nn.sizing",
    "l0jax._src.budget",
    "l0jax._src.calibration.classical",
    "l0jax._src.calibration.path",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # Empty globals: every example imports what it uses, as a reader copying it would have to.
    result = doctest.testmod(module, globs={}, report=False)
    assert result.attempted > 0, f"{name} has no examples: remove it from MODULES or add one."
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see above)."
