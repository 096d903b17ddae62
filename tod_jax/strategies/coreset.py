"""`coreset`: k-center greedy on penultimate features (Sener & Savarese, ICLR 2018).

The labeled samples are the initial centers; each step adds the candidate
farthest from its nearest center. Distances run on the accelerator: each chunk of
candidates against every center (sharded_map.PoolMapper), O(chunk * centers) memory.
"""

import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tod_jax import caches, strategies
from tod_jax.sharded_map import PoolMapper, make_mesh


def _min_sq_dist(centers: chex.Array, points: chex.Array) -> chex.Array:
  """Squared distance from each point to its nearest center. [c, d], [n, d] -> [n]."""
  sq = (jnp.sum(points ** 2, -1)[:, None] + jnp.sum(centers ** 2, -1)[None, :]
        - 2.0 * points @ centers.T)
  return jnp.maximum(jnp.min(sq, axis=1), 0.0)


@caches.memoize
def _distances(chunk: int, mesh: Mesh) -> PoolMapper:
  return PoolMapper(_min_sq_dist, chunk, mesh)


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
                    budget: int, chunk: int = 1024, mesh: Optional[Mesh] = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Positions (into candidate_features) of `budget` greedy k-center picks.

  Args:
    candidate_features: [n, d] features of the unlabeled candidates.
    center_features: [m, d] features of the labeled samples (m may be 0).
    budget: how many to pick (<= n).
    chunk: candidates compared with the centers at once.
    mesh: the devices the chunks are sharded over (default: all).
  Returns:
    ([budget] distinct int64 positions, in the order picked; [n] float32 distance of
    each candidate to its nearest labeled sample, inf without centers).
  """
  points = np.asarray(candidate_features, np.float32)
  centers = np.asarray(center_features, np.float32)
  best = np.full((len(points),), np.inf, np.float32)
  if len(centers):
    best = _distances(chunk, mesh if mesh is not None else make_mesh())(
        centers, points, np.arange(len(points)))
  picks = np.asarray(_greedy(jnp.asarray(points), jnp.asarray(best), budget), np.int64)
  return picks, np.sqrt(best)


@strategies.register('coreset', features=True)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  """k-center picks; the scores are each candidate's distance to the labeled set."""
  images = ctx.dataset.train_images
  candidate_features = ctx.scorer.features(ctx.state.variables, images, ctx.query_pool)
  labeled_features = ctx.scorer.features(ctx.state.variables, images, ctx.labeled)
  with jax.default_matmul_precision(ctx.config.precision.score):  # ||a||^2 + ||b||^2 - 2ab.
    picks, distances = k_center_greedy(candidate_features, labeled_features, budget,
                                       ctx.config.score_chunk_size, ctx.scorer.mesh)
  return strategies.QueryResult(ctx.query_pool[picks].astype(np.int64), distances)
