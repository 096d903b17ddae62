"""STL-10, Table VIII: resize 128, centre crop 96, batch 64."""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'stl10'
  config.crop_padding = 0
  config.batch_size = 64
  config.unlabeled_batch_size = 64
  config.score_chunk_size = 512
  return config
