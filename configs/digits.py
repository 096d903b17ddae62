"""Embedded default: scikit-learn's 8x8 digits, a small CNN, minutes on 2 CPU cores.

Same protocol shape as the paper (10% start, +5% per cycle, 7 cycles), scaled
down: 1,437 pool images, 360 test images.
"""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'digits'
  config.model = 'small_cnn'
  config.crop_padding = 1
  config.flip = False
  config.learning_rate = 0.05
  config.num_epochs = 40
  config.batch_size = 32
  config.unlabeled_batch_size = 32
  config.score_chunk_size = 512
  config.vaal.width = 32  # VAAL's VAE at a quarter of its CIFAR width for 8x8 images on a CPU.
  return config
