"""Temperature schedules and the optax transform that carries them.

The temperature of the hard-concrete gates is a training hyperparameter that changes during
training. Keeping it in the optimizer state (rather than in a Python attribute closed over by a
jitted function) means changing it never recompiles: it is an array, not a constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from l0jax._src import checks

Array = jax.Array
Schedule = Callable[[ArrayLike], Array]
ScheduleKind = Literal["exponential", "linear", "cosine"]
"""The shape of a temperature schedule."""
SCHEDULE_KINDS: tuple[ScheduleKind, ...] = get_args(ScheduleKind)


def temperature_schedule(
    init: float, final: float, steps: int, kind: ScheduleKind = "exponential"
) -> Schedule:
    """Anneals the temperature from ``init`` to ``final`` over ``steps`` steps.

    Values equal l0-python's ``TemperatureScheduler(init, final, steps, kind).get_temperature(count)``
    (to float32 precision), with ``progress = count / steps``:

    * ``"exponential"``: ``exp(log(init) + (log(final) - log(init)) * progress)``,
    * ``"linear"``: ``init + (final - init) * progress``,
    * ``"cosine"``: ``final + (init - final) * (1 + cos(pi * progress)) / 2``,

    and ``final`` from ``count >= steps`` on. For 2.0 -> 0.1 over 100 steps the values at 50 are
    0.4472 (exponential) and 1.05 (linear and cosine).

    Args:
      init: starting temperature, > 0.
      final: final temperature, > 0.
      steps: number of steps of annealing, an integer >= 1.
      kind: ``"exponential"``, ``"linear"`` or ``"cosine"``.

    Returns:
      An optax-style schedule: a function of the step count (int or traced int array) returning
      the temperature as a float32 scalar array.
    """
    checks.check_positive("init", init, hint="Temperatures must be positive.")
    checks.check_positive("final", final, hint="Temperatures must be positive.")
    steps = checks.check_int_at_least("steps", steps, 1)
    checks.check_choice("kind", kind, SCHEDULE_KINDS)
    init_f, final_f = float(init), float(final)

    def schedule(count: ArrayLike) -> Array:
        count = jnp.asarray(count)
        progress = jnp.clip(count.astype(jnp.float32) / steps, 0.0, 1.0)
        if kind == "exponential":
            # math.log gives weak Python floats: np.log's float64 scalars would not combine with
            # the float32 progress under x64 and strict dtype promotion.
            value = jnp.exp(math.log(init_f) + (math.log(final_f) - math.log(init_f)) * progress)
        elif kind == "linear":
            value = init_f + (final_f - init_f) * progress
        else:
            value = final_f + (init_f - final_f) * (1.0 + jnp.cos(jnp.pi * progress)) / 2.0
        return jnp.where(count >= steps, jnp.float32(final_f), value.astype(jnp.float32))

    return schedule


def constant_temperature(value: float) -> Schedule:
    """A schedule that always returns ``value`` (> 0), as a float32 scalar array.

    Args:
      value: the temperature, > 0.

    Returns:
      An optax-style schedule.
    """
    checks.check_positive("temperature", value, hint="It is the concrete temperature beta, e.g. 2/3.")
    value = float(value)
    return lambda count: jnp.full((), value, jnp.float32)


class AnnealTemperatureState(NamedTuple):
    """State of ``anneal_temperature``: the number of updates so far and the temperature to use now."""

    count: Array  # int32 scalar
    temperature: Array  # float32 scalar


def anneal_temperature(schedule: Schedule | float) -> optax.GradientTransformation:
    """An optax transformation that carries the gate temperature along the optimizer's steps.

    It leaves the updates unchanged; after ``k`` updates its state holds ``count = k`` and
    ``temperature = schedule(k)``. Read the temperature with ``current_temperature(opt_state)`` and
    feed it to the gates: it is an array in the state, so a jitted training step that takes the
    state never recompiles when it changes.

    Example:
      >>> import jax.numpy as jnp, optax, l0jax
      >>> tx = optax.chain(optax.adam(1e-2),
      ...                  l0jax.anneal_temperature(l0jax.temperature_schedule(2.0, 0.1, 100)))
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> float(l0jax.current_temperature(state))
      2.0

    Args:
      schedule: a function of the step count (e.g. from ``temperature_schedule``), or a positive
        number for a constant temperature.

    Returns:
      An ``optax.GradientTransformation``.
    """
    if not callable(schedule):
        schedule = constant_temperature(schedule)

    def init_fn(params: optax.Params) -> AnnealTemperatureState:
        del params
        count = jnp.zeros((), jnp.int32)
        return AnnealTemperatureState(count=count, temperature=jnp.asarray(schedule(count), jnp.float32))

    def update_fn(
        updates: optax.Updates, state: AnnealTemperatureState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AnnealTemperatureState]:
        del params
        count = cast(Array, optax.safe_increment(state.count))  # an array in, an array out
        return updates, AnnealTemperatureState(
            count=count, temperature=jnp.asarray(schedule(count), jnp.float32)
        )

    # optax types a transformation's state as any OptState; this one's is AnnealTemperatureState.
    return optax.GradientTransformation(init_fn, cast(optax.TransformUpdateFn, update_fn))


def _unwrap(x: Any) -> Any:
    """Reads the array out of a Flax variable (nnx.Optimizer wraps its state's leaves)."""
    if hasattr(x, "get_value"):
        return x.get_value()
    if hasattr(x, "value") and not isinstance(x, (jax.Array, np.ndarray)):
        return x.value
    return x


def current_temperature(opt_state: Any) -> Array:
    """Finds the temperature carried by ``anneal_temperature`` inside an optimizer state.

    Works on any optax state tree (``optax.chain``, ``optax.multi_transform``, ...) and on Flax
    ``nnx.Optimizer`` objects or their ``opt_state``.

    Args:
      opt_state: an optax state, or an object with an ``opt_state`` attribute.

    Returns:
      The current temperature, a float32 scalar array.

    Raises:
      ValueError: when the state holds no ``anneal_temperature`` state, or more than one.
    """
    tree = getattr(opt_state, "opt_state", opt_state)
    found = [
        leaf
        for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, AnnealTemperatureState))
        if isinstance(leaf, AnnealTemperatureState)
    ]
    if not found:
        raise ValueError(
            "opt_state holds no anneal_temperature state; build the optimizer as "
            "optax.chain(optax.adam(lr), l0jax.anneal_temperature(schedule))."
        )
    if len(found) > 1:
        raise ValueError(
            f"opt_state holds {len(found)} anneal_temperature states, so the temperature is "
            f"ambiguous; chain a single anneal_temperature."
        )
    return jnp.asarray(_unwrap(found[0].temperature))
