"""The hard-concrete distribution of Louizos, Welling & Kingma (2018), arXiv:1712.01312.

One function per equation of the paper. Notation:

* ``log_alpha`` -- the location parameter log(alpha) of each gate (trainable).
* ``temperature`` -- beta, the concrete relaxation's temperature (2/3 in the paper).
* ``gamma < 0`` and ``zeta > 1`` -- the stretch interval (-0.1 and 1.1 in the paper).

A gate is drawn as (eqs. 9-10 of section 2.2)::

    u ~ U(0, 1)
    s = sigmoid((log u - log(1 - u) + log_alpha) / temperature)
    s_bar = s * (zeta - gamma) + gamma
    z = min(1, max(0, s_bar))

so z has point masses at 0 and 1 and a continuous density in between.

Every function here is pure and safe under ``jit``, ``vmap`` and ``grad``; ``temperature``,
``gamma`` and ``zeta`` may be traced arrays. Low-precision inputs (bfloat16, float16) are computed
in float32 and cast back, so uniform noise never rounds to 0 or 1 and extreme ``log_alpha`` values
(+-1e3) give finite gates, penalties and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from l0jax._src import checks

Array = jax.Array

GAMMA = -0.1
ZETA = 1.1
EVAL_RULES = ("median", "paper")
NOISE_KINDS = ("random", "hash")
# The hash noise is a 23-bit grid: u = (k + 1/2) / 2**23, k = 0 .. 2**23 - 1. k + 1/2 and
# 2**23 - k - 1/2 are both exact in float32 (24 significant bits), so the grid is symmetric about
# 1/2 and its logistic noise log(u / (1 - u)) is bounded by log(2**24) = 16.6 in magnitude.
_HASH_BITS = 23


def _compute_dtype(dtype: DTypeLike) -> np.dtype:
    """At least float32: half precision is too coarse for the noise and the logits.

    float64 stays float64 only inside ``jax.enable_x64()``; outside it JAX stores float32 anyway,
    so the noise is drawn in float32 rather than asked of ``jax.random`` in a dtype it would
    truncate (with a warning) on the way out.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.result_type(float)
    return jax.dtypes.canonicalize_dtype(dtype) if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def _real_jnp(name: str, x: ArrayLike) -> Array:
    """``x`` as a JAX array after ``checks.real_input``; host integers become floats first.

    Without 64-bit JAX, ``jnp.asarray`` makes int32 of an int64 NumPy array and wraps values beyond
    2**31 silently (a log_alpha of 10**15 would become negative).
    """
    x = checks.real_input(name, x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        x = x.astype(np.float64)
    return jnp.asarray(x)


def _prepare(log_alpha: ArrayLike, temperature: ArrayLike, gamma: ArrayLike, zeta: ArrayLike):
    """Validates concrete hyperparameters and casts everything to one compute dtype."""
    checks.check_positive("temperature", temperature, hint="It is the concrete temperature beta, e.g. 2/3.")
    checks.check_stretch(gamma, zeta)
    log_alpha = _real_jnp("log_alpha", log_alpha)
    out_dtype = (
        log_alpha.dtype if jnp.issubdtype(log_alpha.dtype, jnp.floating) else _compute_dtype(log_alpha.dtype)
    )
    dtype = _compute_dtype(out_dtype)
    cast = lambda x: jnp.asarray(x).astype(dtype)  # noqa: E731 - explicit casts keep strict promotion happy
    return cast(log_alpha), cast(temperature), cast(gamma), cast(zeta), out_dtype


def _stretch_and_clip(s: Array, gamma: Array, zeta: Array) -> Array:
    """Eq. 10's last two steps: s_bar = s (zeta - gamma) + gamma, z = min(1, max(0, s_bar))."""
    return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def uniform_noise(key: Array, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
    """Draws the uniform noise u of eq. 10, strictly inside (0, 1).

    Args:
      key: a JAX PRNG key.
      shape: shape of the noise, the shape of ``log_alpha``.
      dtype: compute dtype; half precisions are drawn in float32, and float64 only in 64-bit mode
        (``with jax.enable_x64():``), float32 otherwise.

    Returns:
      An array of ``shape`` in the open interval (0, 1): the smallest value is the dtype's smallest
      normal number, the largest ``1 - 2**-23`` (float32; ``1 - 2**-52`` in float64): JAX fills the
      mantissa of a float in [1, 2) and subtracts 1. Both logs below stay finite.
    """
    key = checks.as_key(key, seed=False)
    shape = checks.check_shape("shape", shape)
    dtype = _compute_dtype(dtype)
    return jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)


def _lowbias32(x: Array) -> Array:
    """A 32-bit integer hash with full avalanche (C. Wellons' "lowbias32"), a bijection of uint32."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _hash_grid(key: Array, shape: tuple[int, ...], counter: ArrayLike, offset: ArrayLike) -> Array:
    """The integer k in [0, 2**23) of each element of the hash noise, as float32.

    The key's data words and the counter are hashed into two 32-bit seeds, and element ``i`` (its
    flat index plus ``offset``) gets ``hash(hash(i ^ seed0) ^ seed1)``, whose top 23 bits are k.
    """
    shape = checks.check_shape("shape", shape)
    counter, offset = checks.check_uint32("counter", counter), checks.check_uint32("offset", offset)
    size = int(np.prod(shape, dtype=np.int64))
    if size > 2**32:
        raise ValueError(f"shape {shape} has {size} elements; the hash noise indexes at most 2**32 per key.")
    words = jax.random.key_data(checks.as_key(key, seed=False))  # a raw key's own words
    h = _lowbias32(jnp.asarray(counter).astype(jnp.uint32) ^ jnp.uint32(0x9E3779B9))
    for i in range(words.shape[0]):
        h = _lowbias32(h ^ words[i].astype(jnp.uint32))
    seed1 = _lowbias32(h ^ jnp.uint32(0x85EBCA6B))
    index = jax.lax.iota(jnp.uint32, size).reshape(shape) + jnp.asarray(offset).astype(jnp.uint32)
    x = _lowbias32(_lowbias32(index ^ h) ^ seed1)
    return (x >> (32 - _HASH_BITS)).astype(jnp.float32)


def hash_uniform(
    key: Array,
    shape: tuple[int, ...],
    *,
    counter: ArrayLike = 0,
    offset: ArrayLike = 0,
) -> Array:
    """Counter-based uniform noise strictly inside (0, 1): a pure function of (key, counter, index).

    The noise ``hard_concrete(..., noise="hash")`` draws, and the calibration engine's per-epoch
    gate noise. Element ``i`` (flat index ``i + offset``) is ``(k + 1/2) / 2**23`` with k the top 23
    bits of a double ``lowbias32`` integer hash of the index, seeded by the key's data words and the
    counter. It costs a few integer operations per element that XLA fuses into the gate
    computation, where ``jax.random.uniform`` (threefry) is a separate pass that dominates the time
    of sampling on CPU. Because element ``i`` depends only on ``(key, counter, i + offset)``, a
    block of a larger array drawn with ``offset`` equals the matching slice of the whole draw (the
    noise does not depend on how the array is split across devices). The 23-bit grid truncates the
    logistic noise to +-16.6, an event of probability 1.2e-7.

    Example:
      >>> import jax, l0jax
      >>> u = l0jax.hash_uniform(jax.random.key(0), (1000,), counter=3)
      >>> bool(((u > 0) & (u < 1)).all())
      True
      >>> bool((l0jax.hash_uniform(jax.random.key(0), (10,), counter=3, offset=990) == u[990:]).all())
      True

    Args:
      key: a JAX PRNG key of any implementation (its raw data words are hashed).
      shape: shape of the noise (at most 2**32 elements).
      counter: an integer, e.g. the training step, traced or not; each value gives fresh noise.
      offset: added to the flat index of every element (uint32 arithmetic), traced or not.

    Returns:
      float32 noise of ``shape`` in (0, 1), symmetric about 1/2.
    """
    k = _hash_grid(key, shape, counter, offset)
    return (k + 0.5) * jnp.float32(2.0**-_HASH_BITS)


def hard_concrete_from_uniform(
    u: ArrayLike,
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
) -> Array:
    """Maps given uniform noise to hard-concrete gates (the reparameterisation, eqs. 9-10).

    ``z = clip(sigmoid((log u - log(1 - u) + log_alpha) / temperature) * (zeta - gamma) + gamma, 0, 1)``.
    The gradient flows to ``log_alpha`` (and to ``temperature``, ``gamma``, ``zeta``) through
    the deterministic map, which is what makes the expected L0 objective trainable.

    Args:
      u: uniform noise in the open interval (0, 1), of ``log_alpha``'s shape or broadcastable
        to it (a larger ``u`` would silently broadcast the gates).
      log_alpha: gate locations, any shape.
      temperature: concrete temperature beta > 0 (scalar or broadcastable).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.

    Returns:
      Gates in [0, 1] with the shape and floating dtype of ``log_alpha``.

    Raises:
      ValueError: when ``u`` would change the shape of the gates, or a concrete ``u`` is not
        strictly between 0 and 1 (log u - log(1 - u) would give NaN gates).
    """
    u = checks.real_input("u", u)
    log_alpha = checks.real_input("log_alpha", log_alpha)
    u_shape, la_shape = jnp.shape(u), jnp.shape(log_alpha)
    try:
        broadcast = jnp.broadcast_shapes(u_shape, la_shape)
    except ValueError:
        broadcast = None
    if broadcast != la_shape:
        raise ValueError(
            f"u of shape {u_shape} must have log_alpha's shape {la_shape} (or broadcast to it); "
            f"draw it with l0jax.uniform_noise(key, log_alpha.shape)."
        )
    u_concrete = checks.concrete_real("u", u)
    if u_concrete is not None and not np.all((u_concrete > 0) & (u_concrete < 1)):
        raise ValueError(
            f"u must lie strictly between 0 and 1 (uniform noise; 0 and 1 map to infinite logits and "
            f"values outside give NaN gates), got min {np.min(u_concrete)!r} and max "
            f"{np.max(u_concrete)!r}; draw it with l0jax.uniform_noise."
        )
    return _gates_from_uniform(u, log_alpha, temperature, gamma, zeta)


def _gates_from_uniform(
    u: ArrayLike, log_alpha: ArrayLike, temperature: ArrayLike, gamma: ArrayLike, zeta: ArrayLike
) -> Array:
    """``hard_concrete_from_uniform`` without the checks of ``u``, for noise drawn here (valid by
    construction, and reading it back to the host to check would cost a device round trip).
    """
    log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
    u = jnp.asarray(u).astype(log_alpha.dtype)
    logistic = jnp.log(u) - jnp.log1p(-u)
    s = jax.nn.sigmoid((logistic + log_alpha) / temperature)
    return _stretch_and_clip(s, gamma, zeta).astype(out_dtype)


def hard_concrete(
    key: Array,
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
    noise: str = "random",
) -> Array:
    """Samples hard-concrete gates (Louizos et al. 2018, eqs. 9-10), differentiable in log_alpha.

    Example:
      >>> import jax, jax.numpy as jnp, l0jax
      >>> z = l0jax.hard_concrete(jax.random.key(0), jnp.zeros(4), 2 / 3)
      >>> bool(((z >= 0) & (z <= 1)).all())
      True

    Args:
      key: a JAX PRNG key; the same key gives the same gates.
      log_alpha: gate locations, any shape. bfloat16/float16 are computed in float32.
      temperature: concrete temperature beta > 0; may be a traced array (no recompilation when
        it changes).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      noise: where the uniform noise comes from. ``"random"`` (default): ``uniform_noise``, i.e.
        ``jax.random.uniform`` with the key's own implementation (threefry for
        ``jax.random.key``). ``"hash"``: ``hash_uniform(key, log_alpha.shape)``, a counter-based
        integer hash fused into the gate computation, several times faster on CPU, on a 23-bit
        grid (the logistic noise is truncated at +-16.6, probability 1.2e-7). Both are pure
        functions of the key; fold the step into the key (``jax.random.fold_in``) for fresh
        noise per step.

    Returns:
      Gates in [0, 1], shape and floating dtype of ``log_alpha``. Exactly 0 with probability
      ``prob_zero`` and exactly 1 with probability ``prob_one``.
    """
    checks.check_choice("noise", noise, NOISE_KINDS)
    log_alpha = _real_jnp("log_alpha", log_alpha)
    if noise == "hash":
        log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
        k = _hash_grid(key, log_alpha.shape, 0, 0).astype(log_alpha.dtype)
        # log(u / (1 - u)) with u = (k + 1/2) / 2**23: one log of an exact ratio, instead of the
        # two logs of log u - log1p(-u).
        logistic = jnp.log((k + 0.5) / (2.0**_HASH_BITS - 0.5 - k))
        s = jax.nn.sigmoid((logistic + log_alpha) / temperature)
        return _stretch_and_clip(s, gamma, zeta).astype(out_dtype)
    u = uniform_noise(key, log_alpha.shape, log_alpha.dtype)
    return _gates_from_uniform(u, log_alpha, temperature, gamma, zeta)


def hard_concrete_eval(
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
    rule: str = "median",
) -> Array:
    """Deterministic test-time gates.

    * ``rule="median"`` (the default everywhere in l0jax, and l0-python >= 0.6):
      ``clip(sigmoid(log_alpha / temperature) * (zeta - gamma) + gamma, 0, 1)``, the gate at the
      median of the noise (u = 1/2), consistent with the temperature used in training.
    * ``rule="paper"``: Louizos et al. eq. 13,
      ``clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``, without the temperature.

    Args:
      log_alpha: gate locations, any shape.
      temperature: concrete temperature beta > 0 (ignored by ``rule="paper"`` but still checked).
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      rule: ``"median"`` or ``"paper"``.

    Returns:
      Gates in [0, 1] with the shape and floating dtype of ``log_alpha``.
    """
    checks.check_choice("rule", rule, EVAL_RULES)
    log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
    logits = log_alpha / temperature if rule == "median" else log_alpha
    return _stretch_and_clip(jax.nn.sigmoid(logits), gamma, zeta).astype(out_dtype)


def prob_nonzero(
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
) -> Array:
    """P(z != 0) of each gate, eq. 12: ``sigmoid(log_alpha - temperature * log(-gamma / zeta))``.

    Args:
      log_alpha: gate locations, any shape.
      temperature: concrete temperature beta > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.

    Returns:
      Probabilities in [0, 1], shape and floating dtype of ``log_alpha``.
    """
    log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
    return jax.nn.sigmoid(log_alpha - temperature * jnp.log(-gamma / zeta)).astype(out_dtype)


def prob_zero(
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
) -> Array:
    """P(z = 0) of each gate: the mass the clip puts at 0, ``1 - prob_nonzero`` (computed stably).

    Args:
      log_alpha: gate locations, any shape.
      temperature: concrete temperature beta > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.

    Returns:
      Probabilities in [0, 1], shape and floating dtype of ``log_alpha``.
    """
    log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
    return jax.nn.sigmoid(temperature * jnp.log(-gamma / zeta) - log_alpha).astype(out_dtype)


def prob_one(
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
) -> Array:
    """P(z = 1) of each gate: the mass the clip puts at 1.

    z = 1 when s >= (1 - gamma) / (zeta - gamma); since logit(s) = (L + log_alpha) / temperature
    with L standard logistic, this is ``sigmoid(log_alpha - temperature * log((1 - gamma) / (zeta - 1)))``
    (the mirror image of eq. 12).

    Args:
      log_alpha: gate locations, any shape.
      temperature: concrete temperature beta > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.

    Returns:
      Probabilities in [0, 1], shape and floating dtype of ``log_alpha``.
    """
    log_alpha, temperature, gamma, zeta, out_dtype = _prepare(log_alpha, temperature, gamma, zeta)
    return jax.nn.sigmoid(log_alpha - temperature * jnp.log((1.0 - gamma) / (zeta - 1.0))).astype(out_dtype)


def l0_penalty(
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
    group_size: ArrayLike = 1,
) -> Array:
    """Expected L0 norm, eq. 12: ``sum_g |g| * P(z_g != 0)``.

    Args:
      log_alpha: gate locations, any shape; one gate per group of parameters.
      temperature: concrete temperature beta > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      group_size: number of parameters each gate switches (section 4's group sparsity), a scalar
        or an array broadcastable to ``log_alpha``; 1 counts gates.

    Returns:
      A scalar: the expected number of non-zero parameters, in float32 (or float64) even for
      half-precision ``log_alpha``, because a sum of many gates needs the precision.
    """
    checks.check_nonnegative("group_size", group_size)
    p = prob_nonzero(jnp.asarray(log_alpha), temperature, gamma=gamma, zeta=zeta)
    p = p.astype(_compute_dtype(p.dtype))
    return jnp.sum(p * jnp.asarray(group_size).astype(p.dtype))


def l0l2_penalty(
    theta: ArrayLike,
    log_alpha: ArrayLike,
    temperature: ArrayLike,
    *,
    gamma: ArrayLike = GAMMA,
    zeta: ArrayLike = ZETA,
    lambda_l0: ArrayLike = 1.0,
    lambda_l2: ArrayLike = 1.0,
) -> Array:
    """Expected L0 plus expected L2 cost of gated parameters (Louizos et al. eq. 14).

    With ``theta = theta_tilde * z``, the L2 norm is paid only when a gate is open::

        R = sum_g P(z_g != 0) * sum_{j in g} (lambda_l2 / 2 * theta_j**2 + lambda_l0)

    Groups come from broadcasting: ``log_alpha`` must broadcast to ``theta``'s shape, and each gate
    covers the entries of ``theta`` it is broadcast over. A kernel of shape (in, out) with
    ``log_alpha`` of shape (in, 1) has one gate per input neuron, a group of ``out`` weights, so its
    L0 cost is ``out * lambda_l0 * P(z != 0)`` as in the paper's group sparsity.

    Args:
      theta: the parameters before gating (theta tilde), any shape.
      log_alpha: gate locations, broadcastable to ``theta.shape``.
      temperature: concrete temperature beta > 0.
      gamma: lower end of the stretch interval, < 0.
      zeta: upper end of the stretch interval, > 1.
      lambda_l0: cost of each expected non-zero parameter, >= 0.
      lambda_l2: L2 strength (the paper's lambda; 1/prior precision convention left to the
        caller), >= 0.

    Returns:
      A scalar penalty in float32 (or float64).
    """
    checks.check_nonnegative("lambda_l0", lambda_l0)
    checks.check_nonnegative("lambda_l2", lambda_l2)
    theta = _real_jnp("theta", theta)
    log_alpha = _real_jnp("log_alpha", log_alpha)
    try:
        jnp.broadcast_shapes(log_alpha.shape, theta.shape)
        compatible = jnp.broadcast_shapes(log_alpha.shape, theta.shape) == theta.shape
    except ValueError:
        compatible = False
    if not compatible:
        raise ValueError(
            f"log_alpha of shape {log_alpha.shape} must broadcast to theta's shape {theta.shape}: "
            f"give one gate per group, e.g. shape (in, 1) for input-neuron groups of an (in, out) kernel."
        )
    p = prob_nonzero(log_alpha, temperature, gamma=gamma, zeta=zeta)
    dtype = _compute_dtype(p.dtype if p.dtype.itemsize >= theta.dtype.itemsize else theta.dtype)
    p = jnp.broadcast_to(p.astype(dtype), theta.shape)
    cost = 0.5 * jnp.asarray(lambda_l2).astype(dtype) * jnp.square(theta.astype(dtype))
    return jnp.sum(p * (cost + jnp.asarray(lambda_l0).astype(dtype)))


def keep_prob_to_log_alpha(keep_prob: ArrayLike) -> Array:
    """Converts a probability of keeping a gate open into log_alpha: ``log(p / (1 - p))``.

    This is the initialisation l0-python uses (``init_keep_prob`` / ``init_mean``). Note that the
    resulting gate's exact P(z != 0) is ``prob_nonzero(logit(p), temperature)``, slightly above p
    because of the stretch.

    Args:
      keep_prob: probabilities strictly inside (0, 1), any shape. Concrete values outside raise
        ValueError; traced values are clipped to the open interval by the float epsilon.

    Returns:
      log_alpha with the shape of ``keep_prob`` (float32 unless float64 is enabled and given).
    """
    keep_prob = checks.real_input("keep_prob", keep_prob)
    checks.check_open_unit("keep_prob", keep_prob)
    p = jnp.asarray(keep_prob)
    p = p.astype(_compute_dtype(p.dtype))
    eps = jnp.finfo(p.dtype).eps
    p = jnp.clip(p, eps, 1.0 - eps)
    return jnp.log(p) - jnp.log1p(-p)


def logit_np(p: ArrayLike) -> np.ndarray:
    """``log(p) - log1p(-p)`` in float64 NumPy, for initial values computed on the host.

    Exact where a float32 logit would round, and it compiles nothing (a jnp logit would compile
    once per parameter shape). Callers check that ``p`` lies in (0, 1).
    """
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)
