"""CIFAR-10, Table VIII: the default protocol."""

from configs import default


def get_config():
  return default.get_config()
