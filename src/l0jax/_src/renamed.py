"""Arguments known by two names: the library's name and an alias (l0-python's, or a deprecated one).

The library calls the gate temperature ``temperature`` and the L0 strength ``lambda_l0`` everywhere.
The l0-python-compatible classes also take l0-python's names (``beta``, ``lambda_reg``); the
functional APIs and the command line take ``beta`` as a deprecated alias, with a
``DeprecationWarning`` naming the new argument.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

T = TypeVar("T")

# The default gate temperature (Louizos et al. 2018; l0-python's ``beta``). Functions that also take
# an alias use this very object as their default, so ``value is DEFAULT_TEMPERATURE`` tells a
# default from a value the caller gave.
DEFAULT_TEMPERATURE = 2 / 3


def aliased(
    where: str,
    name: str,
    value: T,
    alias: str,
    alias_value: T | None,
    *,
    given: bool,
    stacklevel: int = 3,
) -> T:
    """The value of an argument that may also be passed under a deprecated alias.

    Args:
      where: the function (or command) taking the argument, for the messages.
      name: the argument's name.
      value: its value (its default when not given).
      alias: the other name.
      alias_value: the value given under the alias, or None when it was not used.
      given: whether the caller gave ``name`` (rather than leaving its default).
      stacklevel: the warning's stack level, so that it points at the caller's line (3: the
        caller of the function that calls ``aliased``).

    Returns:
      ``alias_value`` when the alias was used, else ``value``.

    Raises:
      ValueError: both names were given.
    """
    if alias_value is None:
        return value
    if given:
        raise ValueError(f"{where}: give {name} or its deprecated alias {alias}, not both.")
    warnings.warn(
        f"{where}: {alias}= is deprecated; pass {name}= instead (same meaning).",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return alias_value


def temperature_argument(beta: float, temperature: float | None) -> tuple[str, float]:
    """The temperature of an l0-python-compatible class, given as l0-python's ``beta`` or as ``temperature``.

    Args:
      beta: the constructor's ``beta`` (``DEFAULT_TEMPERATURE`` when not given).
      temperature: its ``temperature``, or None when not given.

    Returns:
      ``(name, value)``: the name the caller used (for error messages) and the temperature.

    Raises:
      ValueError: both were given.
    """
    if temperature is None:
        return "beta", beta
    if beta is not DEFAULT_TEMPERATURE:
        raise ValueError("give beta (l0-python's name) or temperature, not both; they are the same argument.")
    return "temperature", temperature
