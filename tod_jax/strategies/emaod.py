"""`emaod`: the largest output discrepancy between w_c and its EMA model (Fig. 11)."""

from tod_jax import strategies


@strategies.register('emaod')
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  scores = ctx.scorer.cod(ctx.state.variables, ctx.state.ema_variables,
                          ctx.dataset.train_images, ctx.query_pool)
  return strategies.ranked(ctx, scores, budget)
