"""`emaod`: the largest output discrepancy between w_c and its EMA model (Fig. 11)."""

import numpy as np

from tod_jax import selection, strategies


@strategies.register('emaod')
def query(ctx: 'strategies.QueryContext', budget: int) -> np.ndarray:
  scores = ctx.scorer.cod(ctx.state.variables, ctx.state.ema_variables,
                          ctx.dataset.train_images, ctx.candidates)
  return selection.top_b(scores, ctx.candidates, budget)
