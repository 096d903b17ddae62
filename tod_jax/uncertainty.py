"""Uncertainty measures of predicted class probabilities; larger = more uncertain.

All functions are pure: probabilities `[..., classes]` (rows sum to 1) in,
one score per row `[...]` out: per sample for classification `[N, K]`, per
pixel for segmentation `[N, H, W, K]`; `image_mean` then gives one score per
image.
"""

import chex
import jax.numpy as jnp


def entropy(probs: chex.Array) -> chex.Array:
  """Shannon entropy -sum_k p_k log p_k (nats); 0 log 0 = 0. [..., K] -> [...]."""
  probs = jnp.asarray(probs, jnp.float32)
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0),
                  axis=-1)


def margin(probs: chex.Array) -> chex.Array:
  """Negative top-1 minus top-2 probability gap, -(p_(1) - p_(2)). [..., K] -> [...].

  Negated so that the smallest gap scores highest, like the other measures.
  """
  top2 = jnp.sort(jnp.asarray(probs, jnp.float32), axis=-1)[..., -2:]
  return top2[..., 0] - top2[..., 1]


def least_confidence(probs: chex.Array) -> chex.Array:
  """1 - max_k p_k. [..., K] -> [...]."""
  return 1.0 - jnp.max(jnp.asarray(probs, jnp.float32), axis=-1)


def ratio_confidence(probs: chex.Array) -> chex.Array:
  """Ratio of the top-2 probabilities p_(2) / p_(1), in [0, 1]. [..., K] -> [...]."""
  top2 = jnp.sort(jnp.asarray(probs, jnp.float32), axis=-1)[..., -2:]
  return top2[..., 0] / top2[..., 1]


def bald(mc_probs: chex.Array) -> chex.Array:
  """BALD mutual information H[mean_t p_t] - mean_t H[p_t] (Houlsby et al. 2011).

  Args:
    mc_probs: [..., T, K] probabilities of T stochastic forward passes (segmentation:
      [N, H, W, T, K], so the mean over passes is taken per pixel).
  Returns:
    [...] nonnegative scores; 0 when all T passes agree (a deterministic model).
  """
  chex.assert_rank(mc_probs, {2, 3, 4, 5})
  mc_probs = jnp.asarray(mc_probs, jnp.float32)
  mi = entropy(jnp.mean(mc_probs, axis=-2)) - jnp.mean(entropy(mc_probs), axis=-1)
  return jnp.maximum(mi, 0.0)  # Rounding can make an exact 0 slightly negative.


def image_mean(scores: chex.Array) -> chex.Array:
  """One score per sample: the mean over every axis after the first. [N, ...] -> [N].

  Classification scores [N] come back unchanged. Per-pixel scores [N, H, W] are
  averaged over ALL pixels of the image: a query's pool has no labels, so the
  pixels a mask would ignore (e.g. Cityscapes' void, the synthetic outlines)
  cannot be left out and count like the others.
  """
  scores = jnp.asarray(scores, jnp.float32)
  return jnp.mean(scores, axis=tuple(range(1, scores.ndim)))
