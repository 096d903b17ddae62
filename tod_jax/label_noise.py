"""Label noise for robustness benchmarks (paper Fig. 9): flip pool labels at random.

Each pool label is flipped with probability `config.label_noise` to one of the
other classes, chosen uniformly, with a generator seeded by
`config.label_noise_seed` (independent of the run seed, so every strategy and
seed of a comparison sees the same noisy pool). The test set is never touched.
The flipped indices and their clean and noisy labels go to
WORKDIR/label_noise.json.
"""

import dataclasses
import json
import os
from typing import Optional

import ml_collections
import numpy as np

from tod_jax import devices, files
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError

RECORD = 'label_noise.json'


def check_probability(probability: float) -> None:
  if not 0 <= probability <= 1:
    raise ConfigError(f'label_noise must be a probability in [0, 1]; got {probability}.')


def flip_labels(labels: np.ndarray, num_classes: int, probability: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Flips each label with `probability` to a uniformly drawn *other* class.

  Args:
    labels: [N] int class labels in [0, num_classes).
    num_classes: number of classes (at least 2 when probability > 0).
    probability: chance that a label is flipped, in [0, 1].
    seed: seed of the NumPy generator; the same seed gives the same flips.
  Returns:
    (noisy labels [N], same dtype; sorted indices of the flipped labels).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ConfigError(f'Label noise needs class labels [N]; got shape {labels.shape} '
                     '(segmentation masks are not supported): set --config.label_noise=0.')
  check_probability(probability)
  if probability > 0 and num_classes < 2:
    raise ConfigError('Label noise needs at least 2 classes to flip to another one.')
  rng = np.random.default_rng(seed)
  flipped = np.flatnonzero(rng.random(len(labels)) < probability)
  # An offset in [1, K-1] added modulo K is uniform over the other K-1 classes.
  offsets = rng.integers(1, max(num_classes, 2), len(flipped))
  noisy = labels.copy()
  noisy[flipped] = (labels[flipped] + offsets) % num_classes
  return noisy, flipped


def apply(config: ml_collections.ConfigDict, dataset: Dataset) -> tuple[Dataset, Optional[dict]]:
  """(the dataset with noisy pool labels if config.label_noise > 0, the record of the flips
  or None); writes nothing (write_record does, once every check of a run has passed)."""
  if not config.label_noise:
    return dataset, None
  if (dataset.train_labels < 0).any():
    raise ConfigError('label_noise needs a fully labeled pool (a benchmark with oracle labels); '
                     'set --config.label_noise=0 for a pool with unknown labels.')
  noisy, flipped = flip_labels(dataset.train_labels, dataset.num_classes, config.label_noise,
                               config.label_noise_seed)
  record = {'label_noise': config.label_noise, 'label_noise_seed': config.label_noise_seed,
            'pool_size': dataset.pool_size, 'num_flipped': int(len(flipped)),
            'flipped': files.indices_to_json(flipped),
            'clean_labels': files.indices_to_json(dataset.train_labels[flipped]),
            'noisy_labels': files.indices_to_json(noisy[flipped])}
  return dataclasses.replace(dataset, train_labels=noisy), record


def write_record(workdir: str, record: Optional[dict]) -> None:
  """WORKDIR/label_noise.json from `apply`'s record (process 0; nothing without noise)."""
  if record is not None and devices.is_writer():
    files.write_atomic(os.path.join(workdir, RECORD), json.dumps(record))
