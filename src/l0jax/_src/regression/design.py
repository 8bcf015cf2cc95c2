"""The design matrix X as a jit argument with ``matvec``, plus the input checks of the regression API.

The regression code only ever computes ``X @ w`` (autodiff supplies ``X.T @ r`` through the
operator's own ``rmatvec``). X is wrapped once by the library's shared matrix operators
(``l0jax._src.operators.as_operator``: dense XLA, ``segment_sum`` sparse, or scipy CSR kernels behind
a callback, chosen by measurement on CPU) into a pytree that jitted functions take as an argument.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks, operators
from l0jax._src.operators import Backend

Array = jax.Array
DeviceLike = jax.Device | str | None
"""Where to compute: JAX's default device (None), a ``jax.Device``, or a platform name such as "cpu"."""
MatrixOperator = operators.MatrixOperator


def compute_dtype(dtype: DTypeLike) -> Any:
    """float64 when JAX runs in 64-bit mode and the data is float64; float32 otherwise."""
    if jax.config.read("jax_enable_x64") and np.dtype(dtype) == np.float64:
        return jnp.float64
    return jnp.float32


def _check_numeric(name: str, dtype: DTypeLike) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {np.dtype(dtype)}; convert it to float.")


def as_design(
    X: Any,
    *,
    name: str = "X",
    n_features: int | None = None,
    device: DeviceLike = None,
    backend: Backend = "auto",
) -> MatrixOperator:
    """Validates X and wraps it for the compiled loop.

    Args:
      X: (n_samples, n_features) dense array (NumPy or JAX), scipy sparse matrix/array of any
        format (``csr_matrix``, ``csr_array``, ``csc_matrix``, ...), or an operator from
        ``as_operator`` (used as it is).
      name: the argument's name, used in error messages.
      n_features: the number of columns the model expects, or None to accept any.
      device: a ``jax.Device`` to place the data on, or None for the default device.
      backend: the operator backend, "auto", "dense", "sparse" or "scipy" (see ``as_operator``).

    Returns:
      A matrix operator (``matvec``, ``shape``, ``dtype``), a pytree to pass to jitted functions.

    Raises:
      ValueError: X is not 2-D, is empty, is not numeric, holds NaN/inf, or has the wrong number
        of columns.
    """
    if not isinstance(X, MatrixOperator):
        ndim = getattr(X, "ndim", None)
        if ndim is None and isinstance(X, (list, tuple)):
            ndim = np.ndim(X)
        if ndim == 1:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features), got a 1-D array; "
                f"reshape a single feature with X.reshape(-1, 1)."
            )
        dtype = getattr(X, "dtype", None)
        X = operators.as_operator(
            X, backend=backend, name=name, dtype=compute_dtype(dtype if dtype is not None else np.float32)
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} columns but the model was built with n_features={n_features}; "
            f"pass the same features it was built for."
        )
    if device is not None:
        X = jax.device_put(X, device)
    return X


def as_targets(y: ArrayLike, n_samples: int, *, name: str = "y", numeric: bool = True) -> np.ndarray:
    """Validates a target vector: length n_samples, finite, real. A single column is flattened.

    Args:
      y: (n_samples,) or (n_samples, 1) array-like.
      n_samples: the number of rows of X.
      name: the argument's name, used in error messages.
      numeric: require real numbers (False accepts class labels of any kind; numeric labels are
        still checked for NaN/inf).

    Returns:
      A 1-D NumPy array of length n_samples.
    """
    try:
        arr = np.asarray(y)
    except Exception as err:
        raise ValueError(f"{name} must be a 1-D array of length {n_samples}: {err}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        # (n, 1) targets would broadcast against (n,) predictions into an (n, n) loss (as they do
        # in l0-python); they are flattened instead.
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have shape ({n_samples},) to match X's {n_samples} rows, got shape {arr.shape}."
        )
    if numeric:
        _check_numeric(name, arr.dtype)
    if numeric or arr.dtype.kind in "biuf":
        # Class labels may be strings; only numbers can be NaN or infinite.
        checks.check_finite(name, arr)
    return arr


def resolve_device(device: Any) -> Any:
    """Turns l0-python's ``device`` argument ("cpu", "cuda", "cuda:1", a jax.Device, None) into a jax.Device.

    Args:
      device: None (JAX's default device), a ``jax.Device``, or a string: "cpu", "gpu"/"cuda",
        "tpu", optionally with ":index".

    Returns:
      A ``jax.Device`` or None.
    """
    if device is None or isinstance(device, jax.Device):
        return device
    if not isinstance(device, str):
        raise ValueError(
            f"device must be None, a jax.Device or a string like 'cpu' or 'cuda', got {device!r}."
        )
    kind, _, index = device.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(kind.lower(), kind.lower())
    checks.check_choice("device", platform, ("cpu", "gpu", "tpu"))
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        raise ValueError(
            f"device={device!r} was requested but JAX has no {platform} backend here "
            f"(available: {jax.default_backend()}); install the matching jax extra or use device='cpu'."
        ) from None
    i = int(index) if index else 0
    if not 0 <= i < len(devices):
        raise ValueError(f"device={device!r}: there are only {len(devices)} {platform} device(s).")
    return devices[i]
