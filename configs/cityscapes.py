"""Cityscapes semantic segmentation, Table VIII: DRN-D-22, Adam 5e-4, 40 epochs, batch 4.

688 x 688 random crops with horizontal flip for training; evaluation on the 500
validation images at full resolution (1024 x 2048). Needs the manual TFDS download
(see README); a missing dataset stops the run with the instructions.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cityscapes'
  config.model = 'drn_d_22'
  config.crop_padding = 0
  config.crop_size = 688
  config.optimizer = 'adam'
  config.learning_rate = 5e-4
  config.weight_decay = 0.0  # Table VIII lists no weight decay for Cityscapes.
  config.lr_decay_factor = 1.0  # No schedule is given for Cityscapes: constant learning rate.
  config.tod_loss_form = 'paper'  # No segmentation code is published: the paper's Eq. 7, per pixel.
  config.num_epochs = 40
  config.batch_size = 4
  config.unlabeled_batch_size = 4
  config.score_chunk_size = 8  # Full-resolution images per sharded scoring call.
  return config
