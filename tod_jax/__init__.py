"""tod_jax: Temporal Output Discrepancy active learning in JAX/Flax."""

__version__ = '0.1.0'
