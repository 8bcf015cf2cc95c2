"""Private implementation modules of l0jax. Import from ``l0jax`` instead."""
