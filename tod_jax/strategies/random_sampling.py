"""`random`: uniform sampling without replacement."""

import numpy as np

from tod_jax import strategies


@strategies.register('random')
def query(ctx: 'strategies.QueryContext', budget: int) -> np.ndarray:
  return ctx.rng.choice(ctx.candidates, size=budget, replace=False).astype(np.int64)
