"""Label noise: the stated fraction flipped, always to another class, reproducible, test untouched."""

import json

import numpy as np
import pytest

from conftest import make_tiny_config
from tod_jax import datasets, label_noise


def test_flips_the_stated_fraction_to_other_classes_uniformly():
  labels = np.arange(20000, dtype=np.int32) % 10
  noisy, flipped = label_noise.flip_labels(labels, 10, 0.2, seed=3)
  assert noisy.dtype == labels.dtype and noisy.shape == labels.shape
  assert abs(len(flipped) / len(labels) - 0.2) < 0.01  # 3.5 binomial std.
  assert (noisy[flipped] != labels[flipped]).all()  # Never to the same class.
  kept = np.setdiff1d(np.arange(len(labels)), flipped)
  np.testing.assert_array_equal(noisy[kept], labels[kept])
  np.testing.assert_array_equal(np.flatnonzero(noisy != labels), flipped)
  # Uniform over the 9 other classes: each offset about 1/9 of the flips.
  offsets = np.bincount((noisy[flipped] - labels[flipped]) % 10, minlength=10)
  assert offsets[0] == 0
  np.testing.assert_allclose(offsets[1:] / len(flipped), 1 / 9, atol=0.02)


def test_reproducible_from_the_seed():
  labels = np.arange(500) % 4
  a, fa = label_noise.flip_labels(labels, 4, 0.3, seed=7)
  b, fb = label_noise.flip_labels(labels, 4, 0.3, seed=7)
  c, _ = label_noise.flip_labels(labels, 4, 0.3, seed=8)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(fa, fb)
  assert (a != c).any()


def test_edge_probabilities_and_bad_values():
  labels = np.array([0, 1, 2, 0, 1])
  unchanged, none = label_noise.flip_labels(labels, 3, 0.0, seed=0)
  np.testing.assert_array_equal(unchanged, labels)
  assert len(none) == 0
  all_flipped, every = label_noise.flip_labels(labels, 3, 1.0, seed=0)
  np.testing.assert_array_equal(every, np.arange(5))
  assert (all_flipped != labels).all()
  with pytest.raises(ValueError, match='probability'):
    label_noise.flip_labels(labels, 3, 1.5, seed=0)


def test_apply_corrupts_pool_labels_only_and_records_them(tmp_path):
  config = make_tiny_config()
  dataset = datasets.load_dataset(config)
  assert label_noise.apply(config, dataset) == (dataset, None)  # Default 0: no noise.
  label_noise.write_record(str(tmp_path), None)
  assert not (tmp_path / label_noise.RECORD).exists()
  config.label_noise, config.label_noise_seed = 0.25, 5
  noisy, record = label_noise.apply(config, dataset)
  assert not (tmp_path / label_noise.RECORD).exists()  # Written only once a run's checks pass.
  label_noise.write_record(str(tmp_path), record)
  np.testing.assert_array_equal(noisy.test_labels, dataset.test_labels)
  np.testing.assert_array_equal(noisy.test_images, dataset.test_images)
  changed = np.flatnonzero(noisy.train_labels != dataset.train_labels)
  record = json.loads((tmp_path / label_noise.RECORD).read_text())
  assert record['flipped'] == changed.tolist() and record['num_flipped'] == len(changed)
  assert record['clean_labels'] == dataset.train_labels[changed].tolist()
  assert record['noisy_labels'] == noisy.train_labels[changed].tolist()
  assert abs(len(changed) / dataset.pool_size - 0.25) < 0.04
