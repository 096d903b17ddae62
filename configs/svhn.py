"""SVHN (TFDS svhn_cropped), Table VIII."""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'svhn_cropped'
  config.flip = False  # Digits are not mirror-symmetric; the authors' code does not flip SVHN.
  return config
