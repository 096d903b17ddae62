"""`badge`: k-means++ seeds over last-layer gradient embeddings (Ash et al., ICLR 2020).

A candidate's embedding is the cross-entropy gradient at its predicted label with
respect to the last Dense layer's weights, g = (p - onehot(yhat)) ⊗ h, kept as its
two factors (tod_jax/badge.py) from one sharded pass over the candidates
(Scorer.gradient_embedding_factors). k-means++ seeding on the device then picks
`budget` candidates that are uncertain (large ||g||) and diverse (far apart): the
first is the largest ||g||, each next one is drawn with probability proportional to
its squared distance to the nearest pick. The key comes from the query's generator,
so a rerun picks the same.

Scores: ||g|| per candidate (the gradient's size; the first pick is the largest).
The later picks are drawn, not the top of the scores: the result's order is 'neither'.
Classification only: cycle.setup refuses a segmentation dataset before training.
"""

import jax
import numpy as np

from tod_jax import badge as badge_lib
from tod_jax import ranking, strategies


@strategies.register('badge', features=True, classification_only=True)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  """k-means++ picks over the candidates' gradient embeddings; scores ||g||."""
  a, h = ctx.scorer.gradient_embedding_factors(ctx.state.variables, ctx.dataset.train_images,
                                               ctx.query_pool)
  norms = np.sqrt(np.asarray(badge_lib.squared_norms(a, h), np.float32))
  if not np.isfinite(norms).all():
    raise ranking.NonFiniteScoreError(
        f'{int((~np.isfinite(norms)).sum())} gradient embeddings are not finite: the model '
        'diverged; lower --config.learning_rate.')
  # Padded to a multiple of score_chunk_size, so the seeding compiles once for several cycles
  # (the picks are those without padding: tests/test_badge.py).
  size = -(-len(a) // ctx.config.score_chunk_size) * ctx.config.score_chunk_size
  pad = lambda x: np.pad(x, ((0, size - len(x)), (0, 0)))
  key = jax.random.PRNGKey(int(ctx.rng.integers(2**31)))
  with jax.default_matmul_precision(ctx.config.precision.score):  # Distances: cancellation.
    picks = badge_lib.kmeans_plus_plus(pad(a), pad(h), key, budget, np.arange(size) < len(a))
  picks = np.asarray(picks, np.int64)
  return strategies.QueryResult(ctx.query_pool[picks].astype(np.int64), norms, order='neither')
