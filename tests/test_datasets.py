"""Datasets by name: digits, every paper dataset through TFDS mock data, Cityscapes."""

import chex
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tod_jax import augment, datasets


def test_digits_split_and_stats():
  ds = datasets.load_digits()
  chex.assert_shape(ds.train_images, (1437, 8, 8, 1))
  chex.assert_shape(ds.test_images, (360, 8, 8, 1))
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.num_classes == 10 and set(ds.train_labels) == set(range(10))
  x = augment.normalize(jnp.asarray(ds.train_images), ds.mean, ds.std)
  assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3
  # The split is fixed, not seed-dependent.
  np.testing.assert_array_equal(ds.test_labels, datasets.load_digits().test_labels)


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
    ds = datasets.load_dataset(config)
  assert ds.image_shape == shape
  assert ds.train_images.dtype == np.uint8
  assert len(ds.test_labels) == n_test
  assert ds.pool_size + n_test == 12
  assert ds.num_classes == n_classes
  assert len(ds.mean) == len(ds.std) == shape[-1]


def test_fit_image_resize_crop_and_pad():
  spec = datasets.TFDS_SPECS['caltech101']
  image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
  chex.assert_shape(datasets._fit_image(image, spec), (224, 224, 3))
  pad = datasets.TFDS_SPECS['fashion_mnist']
  small = np.full((28, 28, 1), 7, np.uint8)
  padded = datasets._fit_image(small, pad)
  chex.assert_shape(padded, (32, 32, 1))
  assert padded[:2].sum() == 0 and padded[2:30, 2:30].min() == 7


def test_unprepared_tfds_dataset_gives_one_clear_error(tmp_path):
  config = ml_collections.ConfigDict({'dataset': 'cifar10', 'data_dir': str(tmp_path)})
  with pytest.raises(datasets.DatasetNotPreparedError,
                     match='tfds build cifar10 --file_format=array_record'):
    datasets.load_dataset(config)


def test_unknown_dataset_names_the_choices():
  config = ml_collections.ConfigDict({'dataset': 'imagenet', 'data_dir': ''})
  with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*cifar10"):
    datasets.load_dataset(config)


def test_cityscapes_through_tfds_mock_data():
  config = ml_collections.ConfigDict({'dataset': 'cityscapes', 'data_dir': ''})
  with tfds.testing.mock_data(num_examples=2):
    ds = datasets.load_dataset(config)
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
  np.testing.assert_array_equal(datasets.cityscapes_train_ids(label_ids),
                                [[255, 0, 1, 2], [13, 18, 255, 255]])
  train_ids = datasets.cityscapes_train_ids(np.arange(256, dtype=np.uint8))
  assert sorted(set(train_ids) - {255}) == list(range(19))


def test_missing_cityscapes_names_the_manual_files_and_flag(tmp_path):
  config = ml_collections.ConfigDict({'dataset': 'cityscapes', 'data_dir': str(tmp_path)})
  with pytest.raises(datasets.DatasetNotPreparedError) as info:
    datasets.load_dataset(config)
  message = str(info.value)
  for part in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip',
               f'{tmp_path}/downloads/manual/', f'--config.data_dir={tmp_path}',
               'tfds build cityscapes/semantic_segmentation'):
    assert part in message, part
