"""Your own images: a folder with labeled/<class>/*, unlabeled/* and optional test/<class>/*.

Queries go to a person: `python -m tod_jax.query` writes them, `python -m tod_jax.label`
imports the answers (see the README, "Use it on your own images"). Set the folder with
--config.data_dir=/path/to/images.
"""

from tod_jax.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'image_folder'
  config.data_dir = ''  # The image folder (required).
  config.image_size = 32  # Every image is resized to image_size x image_size.
  config.image_channels = 3  # 3: RGB, 1: grayscale.
  config.labels = 'ledger'  # Labels come from a person through WORKDIR/labels.json.
  # budget_fraction (5% of seed + unlabeled images per query) and num_cycles (7 queries)
  # keep the default protocol; initial_fraction is unused: the seed set is labeled/.
  config.num_epochs = 50
  config.batch_size = 64
  config.unlabeled_batch_size = 64
  return config
