"""Shipped protocol defaults, importable from any config file: `from tod_jax.configs import default`."""
