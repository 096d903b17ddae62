"""CIFAR-10, Table VIII: the default protocol."""

from tod_jax.configs import default


def get_config():
  return default.get_config()
