"""The generated shapes dataset: deterministic, every class present, ignore only on outlines."""

import chex
import numpy as np

from tod_jax import synthetic_seg


def test_same_seed_same_arrays_other_seed_other_arrays():
  a = synthetic_seg.generate(6, 32, seed=3)
  b = synthetic_seg.generate(6, 32, seed=3)
  c = synthetic_seg.generate(6, 32, seed=4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_dataset_shapes_classes_and_ignore_band():
  ds = synthetic_seg.load(num_train=60, num_test=10, size=32)
  chex.assert_shape(ds.train_images, (60, 32, 32, 3))
  chex.assert_shape(ds.train_labels, (60, 32, 32))
  assert ds.train_labels.dtype == np.uint8 and ds.is_segmentation
  assert ds.num_classes == len(synthetic_seg.CLASSES) == 5 and ds.ignore_label == 255
  assert set(np.unique(ds.train_labels)) == {0, 1, 2, 3, 4, 255}
  ignored = ds.train_labels == 255
  assert 0 < ignored.mean() < 0.15  # A thin band, not whole regions.
  # Every ignored pixel touches a labeled pixel of another class within one pixel.
  padded = np.pad(ds.train_labels, ((0, 0), (1, 1), (1, 1)), constant_values=255)
  shifts = [padded[:, 1 + dy:33 + dy, 1 + dx:33 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
  neighbours = np.stack(shifts)
  assert np.all(((neighbours != 255).sum(0) > 0)[ignored])
  assert len(ds.mean) == len(ds.std) == 3


def test_shape_pixels_take_their_class_colour():
  images, masks = synthetic_seg.generate(40, 32, seed=0)
  for kind in range(1, 5):
    mean = images[masks == kind].mean(0)
    base = synthetic_seg._BASE_COLOURS[kind]
    assert np.abs(mean - base).max() < 25, (kind, mean, base)
