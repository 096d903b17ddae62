"""`cod`: the largest cyclic output discrepancy between w_c and w_{c-1} (Eq. 5).

With config.keep_outputs, w_{c-1}'s outputs are kept from the previous cycle's
query, so each cycle runs one forward pass per pool image (kept_outputs.py).
"""

import numpy as np

from tod_jax import kept_outputs, selection, strategies


@strategies.register('cod')
def query(ctx: 'strategies.QueryContext', budget: int) -> np.ndarray:
  images = ctx.dataset.train_images
  if ctx.config.keep_outputs:
    scores = kept_outputs.cod_scores(
        ctx.scorer, ctx.state.variables, ctx.baseline_variables, images, ctx.candidates,
        ctx.strategy_state, dtype=ctx.config.kept_outputs_dtype,
        max_bytes=ctx.config.kept_outputs_max_bytes)
  else:
    scores = ctx.scorer.cod(ctx.state.variables, ctx.baseline_variables, images,
                            ctx.candidates)
  ctx.report['scores'] = scores
  return selection.top_b(scores, ctx.candidates, budget)
