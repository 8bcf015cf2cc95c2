"""The one key coercion (checks.as_key) and the entry points that use it agree on every kind of key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l0jax._src import checks


def _words(key):
    return np.asarray(jax.random.key_data(key))


def test_integer_seed_is_jax_random_key():
    for seed in (0, 7, np.int64(7), np.uint32(123)):
        key = checks.as_key(seed)
        assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        np.testing.assert_array_equal(_words(key), _words(jax.random.key(int(seed))))


def test_typed_key_is_returned_as_it_is():
    key = jax.random.key(3)
    assert checks.as_key(key) is key
    assert checks.as_key(key, seed=False) is key


def test_raw_key_becomes_a_typed_key_with_the_same_numbers():
    raw = jax.random.PRNGKey(5)
    for given in (raw, np.asarray(raw)):
        key = checks.as_key(given)
        assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        np.testing.assert_array_equal(_words(key), np.asarray(raw))
        np.testing.assert_array_equal(
            np.asarray(jax.random.uniform(key, (4,))), np.asarray(jax.random.uniform(raw, (4,)))
        )


def test_raw_and_typed_keys_agree_under_jit():
    words = jax.jit(lambda k: jax.random.key_data(checks.as_key(k)))(jax.random.PRNGKey(9))
    np.testing.assert_array_equal(np.asarray(words), _words(jax.random.key(9)))
    typed = jax.jit(lambda k: jax.random.key_data(checks.as_key(k)))(jax.random.key(9))
    np.testing.assert_array_equal(np.asarray(typed), np.asarray(words))


def test_wrong_types_raise_type_error_naming_the_argument():
    for bad in ("zero", 1.5, None, True, jnp.float32(0.0), np.zeros(2, np.int32)):
        with pytest.raises(TypeError, match=r"^key must be a JAX PRNG key .* or an integer seed"):
            checks.as_key(bad)
    with pytest.raises(TypeError, match=r"^seed must be a JAX PRNG key"):
        checks.as_key("x", "seed")
    with pytest.raises(TypeError, match=r"^key must be a JAX PRNG key such as jax.random.key\(0\), got 3"):
        checks.as_key(3, seed=False)  # where seeds are not accepted (the pure core)


def test_key_arrays_that_are_not_one_key_raise_value_error():
    with pytest.raises(
        ValueError, match=r"^key must be a single PRNG key, got a batch of keys of shape \(2,\)"
    ):
        checks.as_key(jax.random.split(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"^key as raw key data must have shape \(2,\)"):
        checks.as_key(np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match=r"^key as raw key data"):
        checks.as_key(jnp.stack([jax.random.PRNGKey(0)] * 2))


def test_entry_points_take_raw_keys_like_typed_ones():
    import l0jax

    raw, typed = jax.random.PRNGKey(2), jax.random.key(2)
    # The pure core's hash noise: the same draws.
    np.testing.assert_array_equal(
        np.asarray(l0jax.hash_uniform(raw, (16,), counter=1)),
        np.asarray(l0jax.hash_uniform(typed, (16,), counter=1)),
    )
    # Calibration: the same weights from either form of the same key (and from its seed).
    rng = np.random.default_rng(0)
    M = rng.uniform(0, 1, (6, 40))
    y = M @ rng.uniform(0.5, 1.5, 40)
    kw = dict(lambda_l0=1e-3, lr=0.1, epochs=30, polish=False)
    w_raw = l0jax.calibrate(M, y, key=raw, **kw).weights
    w_typed = l0jax.calibrate(M, y, key=typed, **kw).weights
    w_seed = l0jax.calibrate(M, y, key=2, **kw).weights
    np.testing.assert_array_equal(w_raw, w_typed)
    np.testing.assert_array_equal(w_seed, w_typed)
