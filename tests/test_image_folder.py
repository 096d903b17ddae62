"""A user's image folder as a dataset: pool order, ids, labels, resizing and every error."""

import os
import shutil

import chex
import ml_collections
import numpy as np
import pytest

from conftest import write_image_folder
from tod_jax import datasets, image_folder


def test_image_folder_pool_ids_labels_and_resize(tmp_path):
  truth = write_image_folder(str(tmp_path))
  ds = image_folder.load_image_folder(str(tmp_path), image_size=8, channels=3)
  chex.assert_shape(ds.train_images, (8 + 24, 8, 8, 3))
  chex.assert_shape(ds.test_images, (6, 8, 8, 3))
  assert ds.class_names == ('cat', 'dog') and ds.num_classes == 2
  # Seeds first (class by class), then unlabeled, each sorted; unknown labels are -1.
  assert list(ds.sample_ids[:4]) == [f'labeled/cat/cat_{i:02d}.png' for i in range(4)]
  assert all(s.startswith('unlabeled/') for s in ds.sample_ids[8:])
  np.testing.assert_array_equal(ds.train_labels, [0] * 4 + [1] * 4 + [-1] * 24)
  np.testing.assert_array_equal(ds.test_labels, [0] * 3 + [1] * 3)
  assert {s: ds.class_names[l] for s, l in zip(ds.sample_ids[:8], ds.train_labels)} == {
      s: c for s, c in truth.items() if s.startswith('labeled/')}
  # Resized, not cropped: a cat is still bright on the left, a dog on the right.
  cat, dog = ds.train_images[0].astype(int), ds.train_images[4].astype(int)
  assert cat[:, :3].mean() > cat[:, 5:].mean() + 100 and dog[:, 5:].mean() > dog[:, :3].mean() + 100
  assert ds.root == str(tmp_path) and len(ds.mean) == len(ds.std) == 3
  gray = image_folder.load_image_folder(str(tmp_path), image_size=5, channels=1)
  chex.assert_shape(gray.train_images, (32, 5, 5, 1))


def test_image_folder_without_test_split_and_config_registry(tmp_path):
  write_image_folder(str(tmp_path), test_per_class=0)
  config = ml_collections.ConfigDict({'dataset': 'image_folder', 'data_dir': str(tmp_path),
                                      'image_size': 6, 'image_channels': 3})
  ds = datasets.load_dataset(config)
  chex.assert_shape(ds.test_images, (0, 6, 6, 3))
  assert ds.test_labels.shape == (0,)


@pytest.mark.parametrize('damage,message', [
    (lambda root: shutil.rmtree(os.path.join(root, 'labeled')), 'has no labeled/ directory'),
    (lambda root: shutil.rmtree(os.path.join(root, 'labeled', 'dog')), '1 class folder'),
    (lambda root: shutil.rmtree(os.path.join(root, 'unlabeled')), '0 unlabeled images'),
    (lambda root: os.makedirs(os.path.join(root, 'test', 'bird')), r"folders \['bird'\]"),
    (lambda root: open(os.path.join(root, 'unlabeled', 'x.png'), 'w').close(),
     'Cannot read image .*x.png'),
])
def test_image_folder_errors_name_the_problem(tmp_path, damage, message):
  write_image_folder(str(tmp_path), unlabeled_per_class=1, test_per_class=1)
  damage(str(tmp_path))
  with pytest.raises(ValueError, match=message):
    image_folder.load_image_folder(str(tmp_path), image_size=4)
