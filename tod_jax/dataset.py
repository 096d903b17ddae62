"""A dataset as tod_jax holds it: a pool of uint8 images addressed by index, and a test set.

The pool is the train split; the test split is used for evaluation only. A pool label
of -1 means "not known" (a user's unlabeled images: tod_jax.image_folder). Images are
stored `[N, H, W, C]` uint8 after any deterministic resizing, so a pool that fits in
host memory is gathered by index and normalised / augmented on the accelerator
(tod_jax.augment). Loaders by name: tod_jax.datasets.
"""

import dataclasses
from typing import Optional

import numpy as np

from tod_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labeled train pool and test set. Images uint8 [N, H, W, C].

  Labels are int32 [N] (classification) or per-pixel uint8 masks [N, H, W]
  (segmentation, where `ignore_label` marks pixels without a class).
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]  # Per channel, on the [0, 1] scale.
  std: tuple[float, ...]
  ignore_label: Optional[int] = None
  # Only for datasets read from files: [N] str ids (paths relative to `root`), class names.
  sample_ids: Optional[np.ndarray] = None
  root: str = ''
  class_names: tuple[str, ...] = ()

  @classmethod
  def from_arrays(cls, train_images: np.ndarray, train_labels: np.ndarray,
                  test_images: np.ndarray, test_labels: np.ndarray, num_classes: int = 0,
                  name: str = 'arrays') -> 'Dataset':
    """A user's own classification data as a Dataset (docs/own-data.md).

    Args:
      train_images: the pool, uint8 [N, H, W, C] (or [N, H, W]: one channel).
      train_labels: int [N] class labels; -1 = unknown (then use config.labels='ledger').
      test_images, test_labels: the test split, same layout ([0, ...] arrays for none).
      num_classes: number of classes; 0: max label + 1.
      name: recorded in each metrics line.
    Mean and std per channel are measured on the pool.
    """
    train_images, test_images = (_as_images(x, what) for x, what in
                                 ((train_images, 'train_images'), (test_images, 'test_images')))
    train_labels, test_labels = (_as_labels(y, len(x), what) for x, y, what in (
        (train_images, train_labels, 'train_labels'), (test_images, test_labels, 'test_labels')))
    if len(test_images) and test_images.shape[1:] != train_images.shape[1:]:
      raise DataError(f'test_images are {test_images.shape[1:]} per image but train_images '
                      f'{train_images.shape[1:]}; give both splits the same H, W, C.')
    top = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
    num_classes = num_classes or top + 1
    if num_classes < 2 or top >= num_classes:
      raise DataError(f'Labels must lie in [0, num_classes) with num_classes >= 2; got '
                      f'num_classes={num_classes} and labels up to {top}.')
    return cls(name, train_images, train_labels, test_images, test_labels, num_classes,
               *pool_statistics(train_images))

  @property
  def is_segmentation(self) -> bool:
    return self.train_labels.ndim == 3

  @property
  def pool_size(self) -> int:
    return len(self.train_labels)

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train_images.shape[1:])


def _as_images(images: np.ndarray, what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.dtype != np.uint8:
    raise DataError(f'{what} must be uint8 [N, H, W, C] (or [N, H, W]); got {images.dtype} '
                    f'{images.shape}. Scale to 0..255 and cast with .astype(np.uint8).')
  return images


def _as_labels(labels: np.ndarray, count: int, what: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'{what} must be {count} integer class labels, one per image; got '
                    f'{labels.dtype} {labels.shape}.')
  if (labels < -1).any():
    raise DataError(f'{what} has labels below -1; use 0..num_classes-1, or -1 for unknown.')
  return labels.astype(np.int32)


def pool_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel of uint8 `images` [..., C] on the [0, 1] scale (std at least
  1e-3, so a constant channel still normalises)."""
  scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return (tuple(float(m) for m in scaled.mean(0)),
          tuple(max(float(v), 1e-3) for v in scaled.std(0)))
