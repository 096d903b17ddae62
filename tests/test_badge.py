"""BADGE's factorised gradient embeddings and k-means++ seeding, against hand-computed cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import badge

# Math against hand-computed values: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')

# Five candidates, K = 3 classes, D = 2 features; logits = log p, so softmax(logits) = p.
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.4, 0.3, 0.3], [0.98, 0.01, 0.01],
                  [0.2, 0.2, 0.6]])
FEATURES = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [10.0, 10.0], [2.0, 0.0]])
# a = p - onehot(argmax p), by hand.
A = np.array([[-0.3, 0.2, 0.1], [0.1, -0.4, 0.3], [-0.6, 0.3, 0.3], [-0.02, 0.01, 0.01],
              [0.2, 0.2, -0.4]])
# ||g||² = ||a||² ||h||²: 0.14·1, 0.26·2, 0.54·1, 0.0006·200, 0.24·4. Candidate 3 has the
# largest features but a confident prediction; candidate 4 has the largest gradient.
SQ_NORMS = [0.14, 0.52, 0.54, 0.12, 0.96]
# ||g_i - g_4||² = ||g_i||² + 0.96 - 2 <a_i, a_4> <h_i, h_4>; <a_i, a_4> = -0.06, -0.18,
# -0.18, -0.006, 0.24 and <h_i, h_4> = 2, 2, 0, 20, 4.
SQ_DIST_TO_4 = [1.34, 2.20, 1.50, 1.32, 0.0]


def _factors():
  return badge.gradient_embedding_factors(jnp.log(jnp.asarray(PROBS, jnp.float32)),
                                          jnp.asarray(FEATURES, jnp.float32))


def test_factors_norms_and_distances_by_hand():
  a, h = _factors()
  chex.assert_shape([a, h], [(5, 3), (5, 2)])
  chex.assert_type([a, h], jnp.float32)
  np.testing.assert_allclose(a, A, atol=1e-6)
  np.testing.assert_array_equal(h, FEATURES)
  np.testing.assert_allclose(badge.squared_norms(a, h), SQ_NORMS, rtol=1e-5)
  np.testing.assert_allclose(badge.squared_distances(a, h, a[4:], h[4:])[:, 0], SQ_DIST_TO_4,
                             rtol=1e-5, atol=1e-6)
  # The first seed is the largest gradient, whatever the key.
  for seed in range(3):
    assert int(badge.kmeans_plus_plus(a, h, jax.random.PRNGKey(seed), 1)[0]) == 4


def test_factorised_distances_equal_distances_between_materialised_embeddings():
  rng = np.random.default_rng(0)
  logits, features = rng.normal(size=(9, 4)) * 3, rng.normal(size=(9, 6))
  a, h = badge.gradient_embedding_factors(jnp.asarray(logits, jnp.float32),
                                          jnp.asarray(features, jnp.float32))
  a64, h64 = np.asarray(a, np.float64), np.asarray(h, np.float64)
  g = (a64[:, :, None] * h64[:, None, :]).reshape(9, 4 * 6)  # The K·D embeddings.
  expected = np.sum((g[:, None] - g[None, :3]) ** 2, axis=-1)
  got = badge.squared_distances(a, h, a[:3], h[:3])
  chex.assert_shape(got, (9, 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(badge.squared_norms(a, h), np.sum(g ** 2, -1), rtol=1e-5)
  assert float(jnp.min(got)) >= 0.0  # Clamped: a point's distance to itself is not negative.


# Candidates 0 and 1 have the same embedding from different factors (a doubled, h halved):
# g = (-1, -2, 1, 2), ||g||² = 10 (exact in float32). Candidate 2 is the only other point.
TWINS_A = np.array([[-0.5, 0.5], [-0.25, 0.25], [0.25, -0.25]], np.float32)
TWINS_H = np.array([[2.0, 4.0], [4.0, 8.0], [0.0, 2.0]], np.float32)


def test_second_pick_is_forced_and_copies_of_seeds_come_last():
  for seed in range(5):
    picks = badge.kmeans_plus_plus(TWINS_A, TWINS_H, jax.random.PRNGKey(seed), 3)
    chex.assert_type(picks, jnp.int32)
    # 0 (largest norm, first of a tie), 2 (the only point at a distance > 0), then 1, a
    # copy of seed 0 (D = 0 everywhere left: the first unpicked point).
    np.testing.assert_array_equal(picks, [0, 2, 1])
  chex.assert_shape(badge.kmeans_plus_plus(TWINS_A, TWINS_H, jax.random.PRNGKey(0), 0), (0,))
  with pytest.raises(ValueError, match='Cannot pick 4 seeds among 3 points'):
    badge.kmeans_plus_plus(TWINS_A, TWINS_H, jax.random.PRNGKey(0), 4)


def test_padding_rows_are_never_picked():
  # Two padding rows with the largest norms; the forced picks stay [0, 2, 1].
  a = np.concatenate([TWINS_A, [[-0.5, 0.5], [0.5, -0.5]]]).astype(np.float32)
  h = np.concatenate([TWINS_H, [[50.0, 0.0], [0.0, 60.0]]]).astype(np.float32)
  valid = np.array([True, True, True, False, False])
  for seed in range(5):
    np.testing.assert_array_equal(
        badge.kmeans_plus_plus(a, h, jax.random.PRNGKey(seed), 3, valid), [0, 2, 1])
  # Drawn picks do not depend on the padding either: JAX's (partitionable) threefry gives
  # element i the same noise in a longer vector.
  rng = np.random.default_rng(2)
  a, h = rng.normal(size=(300, 10)), rng.normal(size=(300, 16))
  pad = lambda x: np.pad(x, ((0, 212), (0, 0))).astype(np.float32)
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(
      badge.kmeans_plus_plus(pad(a), pad(h), key, 40, np.arange(512) < 300),
      badge.kmeans_plus_plus(a.astype(np.float32), h.astype(np.float32), key, 40))


def test_picks_are_distinct_and_the_same_for_the_same_key():
  rng = np.random.default_rng(1)
  a, h = badge.gradient_embedding_factors(jnp.asarray(rng.normal(size=(50, 5)), jnp.float32),
                                          jnp.asarray(rng.normal(size=(50, 7)), jnp.float32))
  a = a.at[10:20].set(a[0])  # Ten copies of candidate 0's embedding.
  h = h.at[10:20].set(h[0])
  first = badge.kmeans_plus_plus(a, h, jax.random.PRNGKey(3), 50)
  assert sorted(np.asarray(first).tolist()) == list(range(50))  # Every point once.
  np.testing.assert_array_equal(first, badge.kmeans_plus_plus(a, h, jax.random.PRNGKey(3), 50))
  assert not np.array_equal(first[:20], badge.kmeans_plus_plus(a, h, jax.random.PRNGKey(4),
                                                               50)[:20])


def test_second_pick_is_drawn_in_proportion_to_squared_distance():
  # a = [1]: g = h. Seed 0 = (4, 0) (the largest norm); D² to it: 16, 4, 1.
  a = jnp.ones((4, 1), jnp.float32)
  h = jnp.asarray([[4.0, 0.0], [0.0, 0.0], [2.0, 0.0], [3.0, 0.0]], jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 10_000)
  picks = jax.vmap(functools.partial(badge.kmeans_plus_plus, a, h, budget=2))(keys)
  assert (np.asarray(picks[:, 0]) == 0).all()
  frequencies = np.bincount(np.asarray(picks[:, 1]), minlength=4) / len(keys)
  # Binomial standard deviations at most 0.0043: 0.02 is over 4.5 of them.
  np.testing.assert_allclose(frequencies, [0.0, 16 / 21, 4 / 21, 1 / 21], atol=0.02)
