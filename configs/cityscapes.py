"""Cityscapes semantic segmentation, Table VIII: DRN-D-22, Adam 5e-4, 40 epochs, batch 4.

688 x 688 random crops with horizontal flip for training; evaluation on the 500
validation images at full resolution (1024 x 2048). Needs the manual TFDS download
(see README); a missing dataset stops the run with the instructions.
"""

from tod_jax.configs import segmentation


def get_config():
  config = segmentation.get_config()
  config.dataset = 'cityscapes'
  config.model = 'drn_d_22'
  config.crop_size = 688
  config.score_chunk_size = 8  # Full-resolution images per sharded scoring call.
  # The DRN authors' code starts from ImageNet-pretrained DRN-D-22 (it cannot be downloaded
  # here): on a machine with network fetch drn_d_22-4bd2f8ea.pth (linked from
  # github.com/fyu/drn, model_urls in drn.py) and pass --config.init_checkpoint=PATH (needs
  # the 'pretrained' extra, torch); the 1000-class fc stays fresh for the 19 classes. A
  # Cityscapes-trained DRNSeg file of theirs (base.*, seg) loads too. '' = random init.
  config.init_checkpoint = ''
  return config
