"""`coreset`: k-center greedy on penultimate features (Sener & Savarese, ICLR 2018).

The labeled samples are the initial centers; each step adds the candidate
farthest from its nearest center. Distances run on the accelerator, against
at most `chunk` centers at a time: memory is O(n * chunk), never O(n^2).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from tod_jax import strategies


@jax.jit
def _min_sq_dist_to_chunk(points: chex.Array, centers: chex.Array,
                          best: chex.Array) -> chex.Array:
  """min(best, squared distance from each point to its nearest center). [n, d], [c, d]."""
  sq = (jnp.sum(points ** 2, -1)[:, None] + jnp.sum(centers ** 2, -1)[None, :]
        - 2.0 * points @ centers.T)
  return jnp.minimum(best, jnp.maximum(jnp.min(sq, axis=1), 0.0))


@functools.partial(jax.jit, static_argnames='budget')
def _greedy(points: chex.Array, min_sq_dist: chex.Array, budget: int) -> chex.Array:
  def pick(i, carry):
    dist, chosen = carry
    j = jnp.argmax(dist)
    new = jnp.sum((points - points[j]) ** 2, axis=-1)
    dist = jnp.minimum(dist, new).at[j].set(-jnp.inf)  # -inf: never picked twice.
    return dist, chosen.at[i].set(j)
  _, chosen = jax.lax.fori_loop(0, budget, pick,
                                (min_sq_dist, jnp.zeros((budget,), jnp.int32)))
  return chosen


def k_center_greedy(candidate_features: np.ndarray, center_features: np.ndarray,
                    budget: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Positions (into candidate_features) of `budget` greedy k-center picks.

  Args:
    candidate_features: [n, d] features of the unlabeled candidates.
    center_features: [m, d] features of the labeled samples (m may be 0).
    budget: how many to pick (<= n).
    chunk: centers compared at once.
  Returns:
    ([budget] distinct int64 positions, in the order picked; [n] float32 distance of
    each candidate to its nearest labeled sample, inf without centers).
  """
  points = jnp.asarray(candidate_features, jnp.float32)
  centers = np.asarray(center_features, np.float32)
  best = jnp.full((points.shape[0],), jnp.inf, jnp.float32)
  for start in range(0, len(centers), chunk):
    block = centers[start:start + chunk]
    if len(block) < chunk:  # Pad with a repeated center: one compiled shape for all cycles.
      block = np.concatenate([block, np.repeat(block[:1], chunk - len(block), 0)])
    best = _min_sq_dist_to_chunk(points, jnp.asarray(block), best)
  picks = np.asarray(_greedy(points, best, budget), np.int64)
  return picks, np.sqrt(np.asarray(best, np.float32))


@strategies.register('coreset', features=True)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  """k-center picks; the scores are each candidate's distance to the labeled set."""
  images = ctx.dataset.train_images
  candidate_features = ctx.scorer.features(ctx.state.variables, images, ctx.query_pool)
  labeled_features = ctx.scorer.features(ctx.state.variables, images, ctx.labeled)
  with jax.default_matmul_precision(ctx.config.precision.score):  # ||a||^2 + ||b||^2 - 2ab.
    picks, distances = k_center_greedy(candidate_features, labeled_features, budget,
                                       ctx.config.score_chunk_size)
  return strategies.QueryResult(ctx.query_pool[picks].astype(np.int64), distances)
