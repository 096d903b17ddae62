"""The paper's segmentation protocol (Table VIII, Cityscapes row): Adam 5e-4, 40 epochs, batch 4.

configs/cityscapes.py and configs/synthetic_seg.py start from this.
"""

import ml_collections

from tod_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.crop_padding = 0  # Segmentation crops with crop_size instead.
  config.optimizer = 'adam'
  config.learning_rate = 5e-4
  config.weight_decay = 0.0  # Table VIII lists no weight decay for Cityscapes.
  config.lr_decay_factor = 1.0  # No schedule is given for Cityscapes: constant learning rate.
  config.tod_loss_form = 'paper'  # No segmentation code is published: the paper's Eq. 7, per pixel.
  config.param_init = 'flax'  # Nor is its initialisation: DRN's own code draws He-normal.
  config.num_epochs = 40
  config.batch_size = 4
  config.unlabeled_batch_size = 4
  return config
