"""Generated shapes segmentation (400 pool / 100 test, 32 x 32, 5 classes), tiny DRN, CPU.

The Cityscapes protocol (Adam, 10% start, +5% per cycle) scaled down to minutes
on 2 CPU cores: 3 cycles of 15 epochs, no crop (the images are small), flips.
"""

from tod_jax.configs import segmentation


def get_config():
  config = segmentation.get_config()
  config.dataset = 'synthetic_seg'
  config.model = 'drn_tiny'
  config.crop_size = 0
  config.learning_rate = 3e-3
  config.num_cycles = 3
  config.num_epochs = 15
  config.batch_size = 8
  config.unlabeled_batch_size = 8
  config.score_chunk_size = 256
  return config
