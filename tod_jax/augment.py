"""Augmentation and normalisation inside jit: random crop and flip, per-channel standardising."""

from typing import Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from tod_jax.errors import ConfigError


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
