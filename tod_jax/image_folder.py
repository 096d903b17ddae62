"""A user's own images as a dataset: labeled/<class>/*, unlabeled/**, test/<class>/*.

Read with Pillow: TFDS's ImageFolder lists and decodes files through TensorFlow, which
tod_jax does not need otherwise. Use with configs/image_folder.py and the human-in-the-loop
commands (tod_jax.query, tod_jax.label).
"""

import os
from typing import Sequence

import numpy as np

from tod_jax.dataset import Dataset, pool_statistics
from tod_jax.errors import ConfigError, DataError


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')


def _image_files(root: str, subdir: str) -> list[str]:
  """Sorted ids ('subdir/.../name.png', '/'-separated) of the images under root/subdir."""
  ids = []
  for base, dirs, files in os.walk(os.path.join(root, subdir)):
    dirs.sort()
    rel = os.path.relpath(base, root).replace(os.sep, '/')
    ids += [f'{rel}/{f}' for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
  return ids


def _read_images(root: str, ids: Sequence[str], size: int, channels: int) -> np.ndarray:
  from PIL import Image  # Pillow reads the files; see load_image_folder on why not TFDS.
  images = np.zeros((len(ids), size, size, channels), np.uint8)
  for i, sample_id in enumerate(ids):
    try:
      with Image.open(os.path.join(root, sample_id)) as image:
        image = image.convert('L' if channels == 1 else 'RGB')
        image = image.resize((size, size), Image.BILINEAR)
        images[i] = np.asarray(image).reshape(size, size, channels)
    except OSError as e:
      raise DataError(f'Cannot read image {os.path.join(root, sample_id)} ({e}); remove or '
                       'replace that file.') from e
  return images


def load_image_folder(data_dir: str, image_size: int, channels: int = 3) -> Dataset:
  """A user's own images: `labeled/<class>/*` (seed set), `unlabeled/**` (pool to query),
  optional `test/<class>/*` (evaluation).

  The pool is the seed images then the unlabeled ones (each sorted by path); its
  sample ids are the paths relative to `data_dir`; unlabeled images get label -1.
  Every image is resized to `image_size` x `image_size` (bilinear) with `channels`
  1 (grayscale) or 3 (RGB). Mean and std are measured on the pool. Read with
  Pillow: TFDS's ImageFolder lists and decodes files through TensorFlow, which
  tod_jax does not need otherwise.
  """
  if not data_dir or not os.path.isdir(os.path.join(data_dir, 'labeled')):
    raise DataError(f'Image folder {data_dir!r} has no labeled/ directory; set '
                     '--config.data_dir to a folder with labeled/<class>/*, unlabeled/* and '
                     'optionally test/<class>/*.')
  if channels not in (1, 3):
    raise ConfigError(f'image_channels must be 1 or 3, got {channels}.')
  labeled_dir = os.path.join(data_dir, 'labeled')
  class_names = tuple(sorted(d for d in os.listdir(labeled_dir)
                             if os.path.isdir(os.path.join(labeled_dir, d))))
  if len(class_names) < 2:
    raise DataError(f'{labeled_dir} has {len(class_names)} class folder(s); make one folder '
                     'per class (at least 2), each with a few labeled images.')

  def labeled_split(split):
    ids, labels = [], []
    for label, name in enumerate(class_names):
      files = _image_files(data_dir, f'{split}/{name}')
      ids, labels = ids + files, labels + [label] * len(files)
    return ids, labels

  seed_ids, seed_labels = labeled_split('labeled')
  unlabeled_ids = _image_files(data_dir, 'unlabeled')
  if not seed_ids or not unlabeled_ids:
    raise DataError(f'Image folder {data_dir} has {len(seed_ids)} labeled and '
                     f'{len(unlabeled_ids)} unlabeled images; active learning needs both '
                     '(labeled/<class>/*, unlabeled/*).')
  test_ids, test_labels = [], []
  if os.path.isdir(os.path.join(data_dir, 'test')):
    test_dir = os.path.join(data_dir, 'test')
    extra = {d for d in os.listdir(test_dir)
             if os.path.isdir(os.path.join(test_dir, d))} - set(class_names)
    if extra:
      raise DataError(f'{data_dir}/test has folders {sorted(extra)} that are not classes of '
                       f'labeled/ {list(class_names)}; rename or remove them.')
    test_ids, test_labels = labeled_split('test')

  ids = seed_ids + unlabeled_ids
  pool = _read_images(data_dir, ids, image_size, channels)
  return Dataset(
      'image_folder', pool, np.asarray(seed_labels + [-1] * len(unlabeled_ids), np.int32),
      _read_images(data_dir, test_ids, image_size, channels),
      np.asarray(test_labels, np.int32), len(class_names), *pool_statistics(pool),
      sample_ids=np.asarray(ids), root=os.path.abspath(data_dir), class_names=class_names)
