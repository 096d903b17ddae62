"""Datasets (digits, every paper dataset through TFDS mock data, an image folder) and augmentation."""

import os
import shutil

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import write_image_folder
from tod_jax import input_pipeline


def test_digits_split_and_stats():
  ds = input_pipeline.load_digits()
  chex.assert_shape(ds.train_images, (1437, 8, 8, 1))
  chex.assert_shape(ds.test_images, (360, 8, 8, 1))
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.num_classes == 10 and set(ds.train_labels) == set(range(10))
  x = input_pipeline.normalize(jnp.asarray(ds.train_images), ds.mean, ds.std)
  assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3
  # The split is fixed, not seed-dependent.
  np.testing.assert_array_equal(ds.test_labels, input_pipeline.load_digits().test_labels)


# name -> (pool image shape, test size from a mock of 6 examples per split).
PAPER_DATASETS = {
    'cifar10': ((32, 32, 3), 6, 10),
    'cifar100': ((32, 32, 3), 6, 100),
    'fashion_mnist': ((32, 32, 1), 6, 10),
    'svhn_cropped': ((32, 32, 3), 6, 10),
    'caltech101': ((224, 224, 3), 1, 102),  # 90/10 holdout of 12 pooled images.
    'stl10': ((96, 96, 3), 6, 10),
}


@pytest.mark.parametrize('name', sorted(PAPER_DATASETS))
def test_tfds_loading_with_mock_data(name):
  shape, n_test, n_classes = PAPER_DATASETS[name]
  config = ml_collections.ConfigDict({'dataset': name, 'data_dir': ''})
  with tfds.testing.mock_data(num_examples=6):
    ds = input_pipeline.load_dataset(config)
  assert ds.image_shape == shape
  assert ds.train_images.dtype == np.uint8
  assert len(ds.test_labels) == n_test
  assert ds.pool_size + n_test == 12
  assert ds.num_classes == n_classes
  assert len(ds.mean) == len(ds.std) == shape[-1]


def test_fit_image_resize_crop_and_pad():
  spec = input_pipeline.TFDS_SPECS['caltech101']
  image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
  chex.assert_shape(input_pipeline._fit_image(image, spec), (224, 224, 3))
  pad = input_pipeline.TFDS_SPECS['fashion_mnist']
  small = np.full((28, 28, 1), 7, np.uint8)
  padded = input_pipeline._fit_image(small, pad)
  chex.assert_shape(padded, (32, 32, 1))
  assert padded[:2].sum() == 0 and padded[2:30, 2:30].min() == 7


def test_unprepared_tfds_dataset_gives_one_clear_error(tmp_path):
  config = ml_collections.ConfigDict({'dataset': 'cifar10', 'data_dir': str(tmp_path)})
  with pytest.raises(input_pipeline.DatasetNotPreparedError,
                     match='tfds build cifar10 --file_format=array_record'):
    input_pipeline.load_dataset(config)


def test_unknown_dataset_names_the_choices():
  config = ml_collections.ConfigDict({'dataset': 'imagenet', 'data_dir': ''})
  with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*cifar10"):
    input_pipeline.load_dataset(config)


def test_normalize_hand_computed():
  images = jnp.array([[[[0, 255]]]], jnp.uint8)  # [1, 1, 1, 2]
  out = input_pipeline.normalize(images, (0.5, 0.0), (0.5, 2.0))
  chex.assert_trees_all_close(out, jnp.array([[[[-1.0, 0.5]]]]))


def test_augment_crops_are_windows_of_the_padded_image():
  rng = jax.random.PRNGKey(3)
  images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.int32).reshape(2, 4, 4, 1) + 1
  out = input_pipeline.augment(rng, images, crop_padding=1, flip=False)
  chex.assert_equal_shape([out, images])
  padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i in range(2):
    windows = [padded[i, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
    assert any(np.array_equal(np.asarray(out[i]), w) for w in windows)


def test_augment_flip_only_mirrors_and_hits_both_outcomes():
  images = jnp.tile(jnp.arange(4, dtype=jnp.float32)[None, None, :, None], (64, 2, 1, 1))
  out = np.asarray(input_pipeline.augment(jax.random.PRNGKey(0), images, 0, True))
  flipped = np.all(out == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
  same = np.all(out == np.asarray(images), axis=(1, 2, 3))
  assert np.all(flipped | same) and flipped.any() and same.any()


def test_augment_is_identity_when_disabled():
  images = jnp.ones((3, 5, 5, 2))
  chex.assert_trees_all_equal(input_pipeline.augment(jax.random.PRNGKey(0), images, 0, False),
                              images)


def test_cityscapes_through_tfds_mock_data():
  config = ml_collections.ConfigDict({'dataset': 'cityscapes', 'data_dir': ''})
  with tfds.testing.mock_data(num_examples=2):
    ds = input_pipeline.load_dataset(config)
  chex.assert_shape(ds.train_images, (2, 1024, 2048, 3))
  chex.assert_shape(ds.test_labels, (2, 1024, 2048))
  assert ds.train_images.dtype == ds.train_labels.dtype == np.uint8
  assert ds.is_segmentation and ds.num_classes == 19 and ds.ignore_label == 255
  # Mock label ids are random bytes: every value is a trainId or the ignore label.
  assert set(np.unique(ds.train_labels)) <= set(range(19)) | {255}
  assert (ds.train_labels == 255).any() and (ds.train_labels < 19).any()


def test_cityscapes_train_ids_table():
  label_ids = np.array([[0, 7, 8, 11], [26, 33, 34, 255]], np.uint8)
  # 0 unlabeled -> ignore, 7 road -> 0, 8 sidewalk -> 1, 11 building -> 2, 26 car -> 13,
  # 33 bicycle -> 18, ids past 33 -> ignore.
  np.testing.assert_array_equal(input_pipeline.cityscapes_train_ids(label_ids),
                                [[255, 0, 1, 2], [13, 18, 255, 255]])
  train_ids = input_pipeline.cityscapes_train_ids(np.arange(256, dtype=np.uint8))
  assert sorted(set(train_ids) - {255}) == list(range(19))


def test_missing_cityscapes_names_the_manual_files_and_flag(tmp_path):
  config = ml_collections.ConfigDict({'dataset': 'cityscapes', 'data_dir': str(tmp_path)})
  with pytest.raises(input_pipeline.DatasetNotPreparedError) as info:
    input_pipeline.load_dataset(config)
  message = str(info.value)
  for part in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip',
               f'{tmp_path}/downloads/manual/', f'--config.data_dir={tmp_path}',
               'tfds build cityscapes/semantic_segmentation'):
    assert part in message, part


def test_augment_segmentation_crops_and_flips_image_and_mask_together():
  rng = jax.random.PRNGKey(0)
  # Both encode the pixel position, so a joint crop/flip keeps image == mask everywhere.
  pos = np.arange(12 * 10).reshape(1, 12, 10)
  masks = np.repeat(pos, 16, axis=0)
  images = np.repeat(masks[..., None], 2, axis=-1)
  out_images, out_masks = jax.jit(
      lambda k, i, m: input_pipeline.augment_segmentation(k, i, m, 6, True))(rng, images, masks)
  chex.assert_shape(out_images, (16, 6, 6, 2))
  chex.assert_shape(out_masks, (16, 6, 6))
  np.testing.assert_array_equal(out_images[..., 0], out_masks)
  flipped = 0
  for crop in np.asarray(out_masks):
    top, left = np.unravel_index(crop.min(), (12, 10))
    window = pos[0, top:top + 6, left:left + 6]
    same, mirrored = np.array_equal(crop, window), np.array_equal(crop, window[:, ::-1])
    assert same or mirrored
    flipped += mirrored
  assert 0 < flipped < 16  # Both outcomes occur.


def test_augment_segmentation_without_masks_and_without_crop():
  images = jnp.arange(2 * 4 * 4 * 1).reshape(2, 4, 4, 1)
  out, masks = input_pipeline.augment_segmentation(jax.random.PRNGKey(1), images, None, 0, False)
  assert masks is None
  chex.assert_trees_all_equal(out, images)
  with pytest.raises(ValueError, match='crop_size 5 exceeds the 4x4 images'):
    input_pipeline.augment_segmentation(jax.random.PRNGKey(1), images, None, 5, False)


def test_image_folder_pool_ids_labels_and_resize(tmp_path):
  truth = write_image_folder(str(tmp_path))
  ds = input_pipeline.load_image_folder(str(tmp_path), image_size=8, channels=3)
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
  gray = input_pipeline.load_image_folder(str(tmp_path), image_size=5, channels=1)
  chex.assert_shape(gray.train_images, (32, 5, 5, 1))


def test_image_folder_without_test_split_and_config_registry(tmp_path):
  write_image_folder(str(tmp_path), test_per_class=0)
  config = ml_collections.ConfigDict({'dataset': 'image_folder', 'data_dir': str(tmp_path),
                                      'image_size': 6, 'image_channels': 3})
  ds = input_pipeline.load_dataset(config)
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
    input_pipeline.load_image_folder(str(tmp_path), image_size=4)
