"""Argument checks shared by every layer of the library.

Checks run only on concrete values (Python scalars, NumPy arrays, concrete JAX arrays). Under
``jit`` the same arguments arrive as tracers and are passed through unchecked: raising there would
need a host round trip on every call, and the checks have already run once where the values were
chosen (the schedule, the constructor, the fit call).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


def concrete(value: Any) -> np.ndarray | None:
    """Returns ``value`` as a NumPy array, or None when it is a tracer (unknown at trace time)."""
    if isinstance(value, Tracer):
        return None
    try:
        return np.asarray(value)
    except Exception:  # an abstract value of some other kind: treat as unknown
        return None


def concrete_real(name: str, value: Any) -> np.ndarray | None:
    """``concrete(value)``, raising ValueError when it is not made of real numbers (a string, None)."""
    arr = concrete(value)
    if arr is not None and arr.dtype.kind == "O":  # Python numbers in an object array, or a wrong type
        try:
            arr = real_array(name, value)
        except TypeError:  # None, a dict: a ValueError like every other bad hyperparameter here
            arr = np.asarray(value)
    if arr is not None and not is_real_dtype(arr.dtype):
        raise ValueError(f"{name} must be a real number (or an array of them), got {value!r}.")
    if arr is not None and arr.dtype.kind == "V":  # bfloat16: NumPy compares it only as a native float
        arr = arr.astype(np.float32)
    return arr


def _describe(arr: np.ndarray) -> str:
    if arr.size == 1:
        return repr(arr.reshape(()).item())
    return f"an array with min {np.nanmin(arr)!r} and max {np.nanmax(arr)!r}"


def check_finite(name: str, value: Any) -> None:
    """Raises ValueError when a concrete ``value`` holds NaN or infinity."""
    arr = concrete(value)  # labels (strings) pass: only floats can hold NaN or infinity
    if arr is not None and arr.dtype.kind == "V" and is_real_dtype(arr.dtype):
        arr = arr.astype(np.float32)  # bfloat16
    if arr is None or arr.dtype.kind not in "fc":
        return
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} must be finite, but it has {bad} NaN or infinite value(s); "
            f"remove or impute them before calling."
        )


def check_positive(name: str, value: Any, *, hint: str = "") -> None:
    """Raises ValueError unless every element of a concrete ``value`` is finite and > 0."""
    arr = concrete_real(name, value)
    if arr is None:
        return
    check_finite(name, arr)
    if not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got {_describe(arr)}.{(' ' + hint) if hint else ''}")


def check_nonnegative(name: str, value: Any, *, hint: str = "") -> None:
    """Raises ValueError unless every element of a concrete ``value`` is finite and >= 0."""
    arr = concrete_real(name, value)
    if arr is None:
        return
    check_finite(name, arr)
    if not np.all(arr >= 0):
        raise ValueError(f"{name} must be >= 0, got {_describe(arr)}.{(' ' + hint) if hint else ''}")


def check_stretch(gamma: Any, zeta: Any) -> None:
    """Raises ValueError unless gamma < 0 and zeta > 1 (the stretch interval must contain [0, 1])."""
    g = concrete_real("gamma", gamma)
    if g is not None:
        check_finite("gamma", g)
        if not np.all(g < 0):
            raise ValueError(
                f"gamma must be < 0 (the stretched interval (gamma, zeta) must contain 0 so that "
                f"gates can be exactly zero), got {_describe(g)}; the usual value is -0.1."
            )
    z = concrete_real("zeta", zeta)
    if z is not None:
        check_finite("zeta", z)
        if not np.all(z > 1):
            raise ValueError(
                f"zeta must be > 1 (the stretched interval (gamma, zeta) must contain 1 so that "
                f"gates can be exactly one), got {_describe(z)}; the usual value is 1.1."
            )


def check_open_unit(name: str, value: Any) -> None:
    """Raises ValueError unless every element of a concrete ``value`` lies strictly in (0, 1)."""
    arr = concrete_real(name, value)
    if arr is None:
        return
    check_finite(name, arr)
    if not np.all((arr > 0) & (arr < 1)):
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (a probability of keeping a gate open), "
            f"got {_describe(arr)}; use e.g. 1e-6 or 1 - 1e-6 for (almost) closed or open gates."
        )


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raises ValueError naming the valid choices when ``value`` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r}; choose one of {listed}.")


def check_int_at_least(name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as an int, raising ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_int_in_range(
    name: str, value: Any, low: int, high: int, *, high_name: str = "", hint: str = ""
) -> int:
    """Returns ``value`` as an int, raising ValueError unless it is an integer in [low, high].

    ``high_name`` names the argument the upper bound comes from (the message then reads
    "between 1 and n_items=10"); ``hint`` says why the range is what it is.
    """
    upper = f"{high_name}={high}" if high_name else f"{high}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer between {low} and {upper}, got {value!r}.")
    if not low <= value <= high:
        ending = f": {hint}" if hint else "."
        raise ValueError(f"{name} must be between {low} and {upper}, got {value!r}{ending}")
    return int(value)


def is_real_dtype(dtype: Any) -> bool:
    """True for bool, integer and real floating dtypes, including JAX's bfloat16 (not complex, not text)."""
    dt = np.dtype(dtype)
    return dt.kind in "biuf" or (dt.kind == "V" and bool(jax.numpy.issubdtype(dt, jax.numpy.floating)))


def real_array(name: str, value: Any, dtype: Any = np.float64) -> np.ndarray:
    """``np.asarray(value, dtype)``, raising an error naming ``name`` when it holds no real numbers.

    ``dtype=None`` keeps the array's own (real) dtype.

    NumPy's own messages ("could not convert string to float: 'a'", "setting an array element with
    a sequence") say neither which argument was wrong nor how to fix it. Complex values are refused
    rather than cast, since the cast would drop their imaginary parts silently.

    Raises:
      TypeError: ``value`` is None, a string, a mapping or a set (not an array of numbers at all).
      ValueError: ``value`` holds text, None or complex numbers, or is ragged.
    """
    if value is None or isinstance(value, (str, bytes, dict, set, frozenset)):
        raise TypeError(
            f"{name} must be a number or an array (list) of real numbers, got {type(value).__name__}."
        )
    if isinstance(value, Tracer):
        # Unknown at trace time (checked where the values were made); it stands in for the array.
        return cast(np.ndarray, value)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:  # a ragged list of lists
        raise ValueError(f"{name} must be a rectangular array of real numbers; NumPy says: {err}") from None
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError):
            raise ValueError(
                f"{name} must hold real numbers, but it holds Python objects such as "
                f"{next((v for v in arr.ravel() if not isinstance(v, (int, float, np.number))), None)!r}; "
                f"convert it with np.asarray(..., dtype=float)."
            ) from None
    elif not is_real_dtype(arr.dtype):
        raise ValueError(
            f"{name} must hold real numbers, got dtype {arr.dtype}; convert it with .astype(float)."
        )
    return arr if dtype is None else arr.astype(dtype, copy=False)


def real_input(name: str, value: Any) -> Any:
    """``value`` unchanged when it is a JAX array (or tracer) of real numbers, else ``real_array``'s.

    For the array arguments of the jit-safe functions: a device array is not copied to the host.

    Raises:
      TypeError, ValueError: as ``real_array``; ValueError for a complex JAX array.
    """
    if isinstance(value, (jax.Array, Tracer)):
        if not is_real_dtype(value.dtype):
            raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}; pass its real part.")
        return value
    return real_array(name, value, None)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of ints >= 0) as a tuple; TypeError/ValueError naming ``name``."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if isinstance(dims, (str, bytes)) or not isinstance(dims, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of non-negative integers such as (3, 4), got {shape!r}.")
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{name} must be a tuple of non-negative integers such as (3, 4), got {shape!r}.")
    if any(d < 0 for d in dims):
        raise ValueError(f"{name} must have non-negative dimensions, got {shape!r}.")
    return tuple(int(d) for d in dims)


def check_uint32(name: str, value: Any) -> Any:
    """A concrete ``value`` as uint32 after checking it is an integer in [0, 2**32); tracers pass."""
    if isinstance(value, Tracer):
        return value
    arr = real_array(name, value, None)
    if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() >= 2**32)):
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}.")
    return arr.astype(np.uint32)


def check_threshold(threshold: Any) -> None:
    """A gate threshold: a probability in [0, 1) (or an array of them).

    Raises:
      ValueError: it is outside [0, 1), NaN or not a real number.
    """
    arr = concrete(threshold)
    if arr is None:
        return
    check_finite("threshold", arr)
    if not np.all((arr >= 0) & (arr < 1)):
        raise ValueError(f"threshold must be a probability in [0, 1), got {threshold!r}.")


def as_key(key: Any, name: str = "key", *, seed: bool = True) -> jax.Array:
    """One typed JAX PRNG key from what users pass as a key.

    A typed key (``jax.random.key(0)``) is returned as it is; a raw ``uint32[2]`` key
    (``jax.random.PRNGKey(0)``, a JAX or NumPy array) is wrapped into a typed key of the default
    implementation, which draws the same numbers; with ``seed=True`` an integer is a seed for
    ``jax.random.key``. Traced keys (inside ``jit`` or ``vmap``) are handled alike.

    Args:
      key: the key, or an integer seed.
      name: the argument's name, for the messages.
      seed: whether an integer seed is accepted.

    Returns:
      A typed key array of shape ().

    Raises:
      TypeError: ``key`` is not a key (nor, with ``seed=True``, an integer).
      ValueError: ``key`` is a key array but not one key: a batch of typed keys, or a uint32 array
        not of shape (2,).
    """
    if seed and isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key, got a batch of keys of shape {key.shape}; "
                f"pass one of them (or jax.vmap over them)."
            )
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        if key.shape != (2,):
            raise ValueError(
                f"{name} as raw key data must have shape (2,) (jax.random.PRNGKey), got shape "
                f"{key.shape}; pass a typed key such as jax.random.key(0)."
            )
        return jax.random.wrap_key_data(jnp.asarray(key))
    seeds = " or an integer seed" if seed else ""
    raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.key(0){seeds}, got {key!r}.")
