"""CIFAR-100, Table VIII."""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar100'
  return config
