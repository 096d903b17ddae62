"""Datasets by name (config.dataset): the paper's TFDS datasets, Cityscapes, the embedded
digits, generated shapes and a user's image folder, each loaded into a tod_jax.dataset.Dataset.

TFDS datasets are read with `tfds.data_source` from prepared array_record files, never
downloaded: a missing one stops the run with what to prepare and where.
"""

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from tod_jax import host_pool, image_folder, synthetic_seg
from tod_jax.dataset import Dataset, pool_statistics
from tod_jax.errors import ConfigError, UserError
from tod_jax.registry import Registry


class DatasetNotPreparedError(UserError, RuntimeError):
  """A TFDS dataset is not on disk and cannot be downloaded here."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How to read one TFDS dataset and bring it to the paper's input size."""
  tfds_name: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  splits: Sequence[str] = ('train', 'test')
  holdout_fraction: float = 0.0  # >0: pool all splits, hold out this fraction as test.
  resize: Optional[int] = None  # Resize to resize x resize, then ...
  center_crop: Optional[int] = None  # ... take the centre crop.
  pad_to: Optional[int] = None  # Zero-pad a smaller image to pad_to x pad_to.


TFDS_SPECS = {
    'cifar10': TfdsSpec('cifar10', (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'cifar100': TfdsSpec('cifar100', (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'fashion_mnist': TfdsSpec('fashion_mnist', (0.2860,), (0.3530,), pad_to=32),
    'svhn_cropped': TfdsSpec('svhn_cropped', (0.4310, 0.4302, 0.4463), (0.1965, 0.1984, 0.1992)),
    'caltech101': TfdsSpec('caltech101', (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                           holdout_fraction=0.1, resize=256, center_crop=224),
    'stl10': TfdsSpec('stl10', (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
                      resize=128, center_crop=96),
}


def _fit_image(image: np.ndarray, spec: TfdsSpec) -> np.ndarray:
  """Deterministic resize / centre crop / zero-pad of one uint8 HWC image."""
  if spec.resize is not None and image.shape[:2] != (spec.resize, spec.resize):
    from PIL import Image  # Pillow: only needed for datasets that resize.
    mode_image = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    image = np.asarray(mode_image.resize((spec.resize, spec.resize), Image.BILINEAR))
    image = image.reshape(spec.resize, spec.resize, -1)
  if spec.center_crop is not None:
    top = (image.shape[0] - spec.center_crop) // 2
    left = (image.shape[1] - spec.center_crop) // 2
    image = image[top:top + spec.center_crop, left:left + spec.center_crop]
  if spec.pad_to is not None:
    ph, pw = spec.pad_to - image.shape[0], spec.pad_to - image.shape[1]
    image = np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  return image


def _read_records(sources: Sequence[Any], ids: np.ndarray, spec: TfdsSpec
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of records `ids`, numbered across `sources` one after the other."""
  starts = np.cumsum([0] + [len(s) for s in sources])
  images, labels = [], []
  for i in np.asarray(ids, np.int64):
    split = int(np.searchsorted(starts, i, side='right') - 1)
    example = sources[split][int(i - starts[split])]
    images.append(_fit_image(np.asarray(example['image'], np.uint8), spec))
    labels.append(int(example['label']))
  return np.stack(images), np.asarray(labels, np.int32)


def load_tfds(name: str, data_dir: str = '', block: Optional[tuple[int, int]] = None
              ) -> Dataset:
  """Loads a prepared TFDS dataset (array_record format) with no network access.

  block=(p, count): a process of a multi-host run with config.distributed.host_pool; only the p-th
  of `count` blocks of the pool is read (host_pool.HostShard), the labels of the others
  come from their processes.
  """
  import tensorflow_datasets as tfds  # Heavy import, only for TFDS datasets.
  spec = TFDS_SPECS[name]
  sources = []
  for split in spec.splits:
    try:
      sources.append(tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir or None,
                                      download=False))
    except Exception as e:  # TFDS raises many unrelated types when data is missing.
      raise DatasetNotPreparedError(
          f'TFDS dataset {spec.tfds_name!r} (split {split!r}) is not prepared in '
          f'{data_dir or "the default TFDS data_dir"}: on a machine with network run '
          f'`tfds build {spec.tfds_name} --file_format=array_record --data_dir=DIR`, copy DIR '
          f'here and pass --config.data_dir=DIR. ({type(e).__name__}: {e})') from e
  num_classes = sources[0].dataset_info.features['label'].num_classes
  if spec.holdout_fraction:  # Pool every split; hold out a fixed, seed-independent part.
    total = sum(len(s) for s in sources)
    order = np.random.default_rng(0).permutation(total)
    n_test = max(1, int(round(spec.holdout_fraction * total)))
    test_ids, train_ids = order[:n_test], order[n_test:]
  else:
    train_ids, test_ids = np.arange(len(sources[0])), len(sources[0]) + np.arange(len(sources[1]))
  test_x, test_y = _read_records(sources, test_ids, spec)
  if block is None:
    train_x, train_y = _read_records(sources, train_ids, spec)
  else:
    process, count = block
    bounds = host_pool.block_bounds(len(train_ids), count)
    local_x, local_y = _read_records(sources, train_ids[bounds[process]:bounds[process + 1]],
                                     spec)
    train_x = host_pool.HostShard(local_x, bounds, process)
    train_y = host_pool.gather_blocks(local_y, bounds)
  return Dataset(name, train_x, train_y, test_x, test_y, num_classes, spec.mean, spec.std)


CITYSCAPES = 'cityscapes/semantic_segmentation'
IGNORE_LABEL = 255
# Cityscapes labelId -> trainId for the 19 evaluated classes (cityscapesScripts'
# labels.py); every other labelId is ignored.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                         23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                      'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                      'truck', 'bus', 'train', 'motorcycle', 'bicycle')


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
  """Maps Cityscapes labelIds (uint8) to trainIds 0..18, everything else to 255."""
  table = np.full(256, IGNORE_LABEL, np.uint8)
  for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
    table[label_id] = train_id
  return table[label_ids]


def load_cityscapes(data_dir: str = '') -> Dataset:
  """Cityscapes fine annotations: the 2,975 train images are the pool, the 500
  validation images the test set; full resolution (1024 x 2048), 19 classes.

  Needs about 30 GB of host memory (uint8 images and masks).
  """
  import tensorflow_datasets as tfds  # Heavy import, only for TFDS datasets.
  where = data_dir or os.path.expanduser('~/tensorflow_datasets')
  arrays = []
  for split in ('train', 'validation'):
    try:
      source = tfds.data_source(CITYSCAPES, split=split, data_dir=data_dir or None,
                                download=False)
    except Exception as e:  # TFDS raises many unrelated types when data is missing.
      raise DatasetNotPreparedError(
          f'Cityscapes ({CITYSCAPES!r}) is not prepared in {where}. It needs a manual '
          'download: get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
          f'https://www.cityscapes-dataset.com, put both in {where}/downloads/manual/, run '
          f'`tfds build {CITYSCAPES} --file_format=array_record --data_dir={where}` and pass '
          f'--config.data_dir={where}.') from e
    images = masks = None
    for i in range(len(source)):  # Filled in place: the splits are tens of GB.
      example = source[i]
      image = np.asarray(example['image_left'], np.uint8)
      if images is None:
        images = np.empty((len(source), *image.shape), np.uint8)
        masks = np.empty((len(source), *image.shape[:2]), np.uint8)
      images[i] = image
      masks[i] = cityscapes_train_ids(np.asarray(example['segmentation_label'], np.uint8)[..., 0])
    arrays.append((images, masks))
  (train_x, train_y), (test_x, test_y) = arrays
  # Cityscapes train-set statistics, as in the DRN authors' data preparation.
  return Dataset('cityscapes', train_x, train_y, test_x, test_y, len(CITYSCAPES_CLASSES),
                 (0.29010095, 0.32808145, 0.28696394), (0.18295405, 0.18656561, 0.18447509),
                 IGNORE_LABEL)


def load_digits() -> Dataset:
  """scikit-learn's 8x8 digits (ships with the package): 1,437 pool, 360 test."""
  from sklearn import datasets as sk_datasets
  from sklearn import model_selection
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=0.2, random_state=0, stratify=labels)
  return Dataset('digits', train_x, train_y, test_x, test_y, 10, *pool_statistics(train_x))


DATASETS: Registry[Callable[[ml_collections.ConfigDict], Dataset]] = Registry('dataset',
                                                                              'dataset')
DATASETS.register('digits', lambda config: load_digits())
DATASETS.register('cityscapes', lambda config: load_cityscapes(config.data_dir))
DATASETS.register('synthetic_seg', lambda config: synthetic_seg.load())
DATASETS.register('image_folder', lambda config: image_folder.load_image_folder(
    config.data_dir, config.image_size, config.image_channels))
for _name in TFDS_SPECS:
  DATASETS.register(_name, lambda config, name=_name: load_tfds(name, config.data_dir,
                                                                host_block(config)))


def host_block(config: ml_collections.ConfigDict) -> Optional[tuple[int, int]]:
  """(this process, process count) when each process loads only its block of the pool."""
  if config.get('distributed', {}).get('host_pool', False) and jax.process_count() > 1:
    return jax.process_index(), jax.process_count()
  return None


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Loads `config.dataset` (with config.distributed.host_pool on several processes: this one's block;
  TFDS datasets read only that block, in-memory ones are loaded whole and then split)."""
  dataset = DATASETS.get(config.dataset)(config)
  block = host_block(config)
  if block is None:
    return dataset
  if dataset.is_segmentation:
    raise ConfigError('config.distributed.host_pool splits classification pools only (segmentation '
                      'masks would be gathered whole); set --config.distributed.host_pool=False.')
  if not host_pool.is_sharded(dataset.train_images):
    dataset = dataclasses.replace(dataset,
                                  train_images=host_pool.shard(dataset.train_images, *block))
  images = dataset.train_images
  logging.info('Process %d holds pool rows [%d, %d) of %d (config.distributed.host_pool).', block[0],
               images.lo, images.hi, len(images))
  return dataset
