"""Augmentation and normalisation inside jit, against hand-computed values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import augment


def test_normalize_hand_computed():
  images = jnp.array([[[[0, 255]]]], jnp.uint8)  # [1, 1, 1, 2]
  out = augment.normalize(images, (0.5, 0.0), (0.5, 2.0))
  chex.assert_trees_all_close(out, jnp.array([[[[-1.0, 0.5]]]]))


def test_augment_crops_are_windows_of_the_padded_image():
  rng = jax.random.PRNGKey(3)
  images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.int32).reshape(2, 4, 4, 1) + 1
  out = augment.augment(rng, images, crop_padding=1, flip=False)
  chex.assert_equal_shape([out, images])
  padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i in range(2):
    windows = [padded[i, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
    assert any(np.array_equal(np.asarray(out[i]), w) for w in windows)


def test_augment_flip_only_mirrors_and_hits_both_outcomes():
  images = jnp.tile(jnp.arange(4, dtype=jnp.float32)[None, None, :, None], (64, 2, 1, 1))
  out = np.asarray(augment.augment(jax.random.PRNGKey(0), images, 0, True))
  flipped = np.all(out == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
  same = np.all(out == np.asarray(images), axis=(1, 2, 3))
  assert np.all(flipped | same) and flipped.any() and same.any()


def test_augment_is_identity_when_disabled():
  images = jnp.ones((3, 5, 5, 2))
  chex.assert_trees_all_equal(augment.augment(jax.random.PRNGKey(0), images, 0, False),
                              images)


def test_augment_segmentation_crops_and_flips_image_and_mask_together():
  rng = jax.random.PRNGKey(0)
  # Both encode the pixel position, so a joint crop/flip keeps image == mask everywhere.
  pos = np.arange(12 * 10).reshape(1, 12, 10)
  masks = np.repeat(pos, 16, axis=0)
  images = np.repeat(masks[..., None], 2, axis=-1)
  out_images, out_masks = jax.jit(
      lambda k, i, m: augment.augment_segmentation(k, i, m, 6, True))(rng, images, masks)
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
  out, masks = augment.augment_segmentation(jax.random.PRNGKey(1), images, None, 0, False)
  assert masks is None
  chex.assert_trees_all_equal(out, images)
  with pytest.raises(ValueError, match='crop_size 5 exceeds the 4x4 images'):
    augment.augment_segmentation(jax.random.PRNGKey(1), images, None, 5, False)
