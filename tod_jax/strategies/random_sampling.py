"""`random`: uniform sampling without replacement."""

import numpy as np

from tod_jax import strategies


@strategies.register('random')
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  return strategies.QueryResult(
      ctx.rng.choice(ctx.query_pool, size=budget, replace=False).astype(np.int64))
