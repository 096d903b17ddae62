"""`cod`: the largest cyclic output discrepancy between w_c and w_{c-1} (Eq. 5)."""

import numpy as np

from tod_jax import selection, strategies


@strategies.register('cod')
def query(ctx: 'strategies.QueryContext', budget: int) -> np.ndarray:
  scores = ctx.scorer.cod(ctx.state.variables, ctx.baseline_variables,
                          ctx.dataset.train_images, ctx.candidates)
  return selection.top_b(scores, ctx.candidates, budget)
