"""`cod`: the largest cyclic output discrepancy between w_c and w_{c-1} (Eq. 5).

With config.keep_outputs, w_{c-1}'s outputs are kept from the previous cycle's
query, so each cycle runs one forward pass per pool image (kept_outputs.py).
In cycle 1, w_{c-1} is the network's own initial weights (paper); with
config.cod_first_cycle='lowest' cycle 1 queries the *lowest* scores instead, as
the authors' code does.
"""

import numpy as np

from tod_jax import kept_outputs, selection, strategies


def _check(config) -> None:
  if config.cod_first_cycle not in ('highest', 'lowest'):
    raise ValueError(f'Unknown cod_first_cycle {config.cod_first_cycle!r}; set '
                     "--config.cod_first_cycle to 'highest' (paper) or 'lowest' (authors' code).")


@strategies.register('cod', check=_check)
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
  if ctx.cycle == 1 and ctx.config.cod_first_cycle == 'lowest':
    return selection.top_b(-scores, ctx.candidates, budget)
  return selection.top_b(scores, ctx.candidates, budget)
