"""Fashion-MNIST, Table VIII (28x28 zero-padded to 32x32)."""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'fashion_mnist'
  return config
