"""Flax NNX gates, L0 layers, data gates, model-wide utilities and compression (private modules).

The public surface is ``l0jax.nn``. Everything here calls only the pure core
(``l0jax._src.hard_concrete``, ``l0jax._src.schedules``) and ``l0jax._src.checks``.
"""
