"""Datasets as in-memory uint8 arrays, and augmentation that runs inside jit.

The pool is the train split, addressed by integer index; the test split is used
for evaluation only. A pool label of -1 means "not known" (a user's unlabeled
images, see `load_image_folder`). Images are stored `[N, H, W, C]` uint8 after any
deterministic resizing, so a pool that fits in host memory is gathered by index
and normalised / augmented on the accelerator.
"""

import collections
import dataclasses
import itertools
import os
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from tod_jax import host_pool, sharded_map
from tod_jax.errors import ConfigError, DataError, UserError
from tod_jax.registry import Registry


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
    """A user's own classification data as a Dataset (see README, "Python API").

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
    scaled = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64) / 255.0
    return cls(name, train_images, train_labels, test_images, test_labels, num_classes,
               tuple(float(m) for m in scaled.mean(0)),
               tuple(max(float(v), 1e-3) for v in scaled.std(0)))

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

  block=(p, count): a process of a multi-host run with config.host_pool; only the p-th
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
  scaled = train_x.astype(np.float64) / 255.0
  return Dataset('digits', train_x, train_y, test_x, test_y, 10,
                 (float(scaled.mean()),), (float(scaled.std()),))


def _load_synthetic_seg() -> Dataset:
  from tod_jax import synthetic_seg  # It builds a Dataset: imported here, not at the top.
  return synthetic_seg.load()


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
  scaled = pool.reshape(-1, channels).astype(np.float64) / 255.0
  return Dataset(
      'image_folder', pool, np.asarray(seed_labels + [-1] * len(unlabeled_ids), np.int32),
      _read_images(data_dir, test_ids, image_size, channels),
      np.asarray(test_labels, np.int32), len(class_names),
      tuple(float(m) for m in scaled.mean(0)),
      tuple(max(float(s), 1e-3) for s in scaled.std(0)),
      sample_ids=np.asarray(ids), root=os.path.abspath(data_dir), class_names=class_names)


DATASETS: Registry[Callable[[ml_collections.ConfigDict], Dataset]] = Registry('dataset',
                                                                              'dataset')
DATASETS.register('digits', lambda config: load_digits())
DATASETS.register('cityscapes', lambda config: load_cityscapes(config.data_dir))
DATASETS.register('synthetic_seg', lambda config: _load_synthetic_seg())
DATASETS.register('image_folder', lambda config: load_image_folder(
    config.data_dir, config.image_size, config.image_channels))
for _name in TFDS_SPECS:
  DATASETS.register(_name, lambda config, name=_name: load_tfds(name, config.data_dir,
                                                                host_block(config)))


def host_block(config: ml_collections.ConfigDict) -> Optional[tuple[int, int]]:
  """(this process, process count) when each process loads only its block of the pool."""
  if config.get('host_pool', False) and jax.process_count() > 1:
    return jax.process_index(), jax.process_count()
  return None


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Loads `config.dataset` (with config.host_pool on several processes: this one's block;
  TFDS datasets read only that block, in-memory ones are loaded whole and then split)."""
  dataset = DATASETS.get(config.dataset)(config)
  block = host_block(config)
  if block is None:
    return dataset
  if dataset.is_segmentation:
    raise ConfigError('config.host_pool splits classification pools only (segmentation '
                      'masks would be gathered whole); set --config.host_pool=False.')
  if not host_pool.is_sharded(dataset.train_images):
    dataset = dataclasses.replace(dataset,
                                  train_images=host_pool.shard(dataset.train_images, *block))
  images = dataset.train_images
  logging.info('Process %d holds pool rows [%d, %d) of %d (config.host_pool).', block[0],
               images.lo, images.hi, len(images))
  return dataset


DATA_ON_DEVICE = ('auto', 'always', 'never')


def check_data_on_device(value: str) -> None:
  if value not in DATA_ON_DEVICE:
    raise ConfigError(f'data_on_device {value!r} is not one of {DATA_ON_DEVICE}; set '
                     '--config.data_on_device to one of them.')


def keeps_data_on_device(config: ml_collections.ConfigDict, dataset: Dataset) -> bool:
  """Whether training keeps the pool (uint8 images and labels) on every device.

  config.data_on_device: 'always', 'never', or 'auto' (when the pool's bytes are at
  most config.device_data_max_bytes; each device holds a whole copy).
  """
  check_data_on_device(config.data_on_device)
  if host_pool.is_sharded(dataset.train_images):  # No process holds the whole pool.
    if config.data_on_device == 'always':
      raise ConfigError("data_on_device='always' needs the whole pool on every process; "
                        'with config.host_pool set --config.data_on_device=auto.')
    return False
  if config.data_on_device == 'auto':
    size = dataset.train_images.nbytes + dataset.train_labels.nbytes
    return size <= config.device_data_max_bytes
  return config.data_on_device == 'always'


def prefetch_to_device(batches: Iterable[Any], sharding: jax.sharding.Sharding,
                       size: int = 2) -> Iterator[Any]:
  """Yields each host batch (a pytree) as device arrays laid out by `sharding`,
  transferring `size` batches ahead, so the copy overlaps the running step."""
  queue, batches = collections.deque(), iter(batches)

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(sharded_map.put(batch, sharding))  # Asynchronous transfer.

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def normalize(images: chex.Array, mean: Sequence[float], std: Sequence[float]) -> chex.Array:
  """uint8 [..., C] -> float32, per-channel standardised."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment(rng: chex.PRNGKey, images: chex.Array, crop_padding: int, flip: bool) -> chex.Array:
  """Random crop back to size from a zero-padded image, and random horizontal flip.

  Args:
    rng: PRNG key.
    images: [batch, H, W, C], any dtype (padding is zeros, i.e. black before normalisation).
    crop_padding: zero padding on each side; 0 disables cropping.
    flip: whether to flip each image left-right with probability 1/2.
  Returns:
    [batch, H, W, C], same dtype.
  """
  chex.assert_rank(images, 4)
  batch, height, width, channels = images.shape
  crop_rng, flip_rng = jax.random.split(rng)
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_rng, (batch, 2), 0, 2 * p + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (height, width, channels))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_rng, 0.5, (batch, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1, :], images)
  return images


def augment_segmentation(rng: chex.PRNGKey, images: chex.Array, masks: Optional[chex.Array],
                         crop_size: int, flip: bool) -> tuple[chex.Array, Optional[chex.Array]]:
  """The same random crop and horizontal flip of each image and its mask.

  Args:
    rng: PRNG key.
    images: [batch, H, W, C].
    masks: [batch, H, W] or None (unlabeled images).
    crop_size: side of the square random crop (<= H, W); 0 keeps the full image.
    flip: whether to flip each (image, mask) pair left-right with probability 1/2.
  Returns:
    images [batch, crop, crop, C] and masks [batch, crop, crop] (or None).
  """
  chex.assert_rank(images, 4)
  batch, height, width, channels = images.shape
  crop_rng, flip_rng = jax.random.split(rng)
  if crop_size:
    if crop_size > min(height, width):
      raise ConfigError(f'crop_size {crop_size} exceeds the {height}x{width} images; lower '
                       '--config.crop_size.')
    tops = jax.random.randint(crop_rng, (batch,), 0, height - crop_size + 1)
    lefts = jax.random.randint(jax.random.fold_in(crop_rng, 1), (batch,), 0,
                               width - crop_size + 1)
    crop = lambda a, t, l: jax.lax.dynamic_slice(
        a, (t, l) + (0,) * (a.ndim - 2), (crop_size, crop_size) + a.shape[2:])
    images = jax.vmap(crop)(images, tops, lefts)
    masks = None if masks is None else jax.vmap(crop)(masks, tops, lefts)
  if flip:
    do_flip = jax.random.bernoulli(flip_rng, 0.5, (batch,))
    images = jnp.where(do_flip[:, None, None, None], images[:, :, ::-1], images)
    if masks is not None:
      masks = jnp.where(do_flip[:, None, None], masks[:, :, ::-1], masks)
  return images, masks
