"""`ll4al`: the largest loss predicted by LL4AL's loss prediction module (Yoo & Kweon 2019).

Registering with loss_head=True makes the run train the module alongside the
model (tod_jax.loss_prediction, tod_jax.train.train_step).
"""

from tod_jax import strategies
from tod_jax.errors import ConfigError


@strategies.register('ll4al', loss_head=True)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  if ctx.state.loss_head_params is None:
    raise ConfigError("Strategy 'll4al' needs a train state with a loss prediction module; "
                      'create it with create_train_state(..., loss_head_params=...).')
  scores = ctx.scorer.predicted_loss(ctx.state.variables, ctx.state.loss_head_params,
                                     ctx.dataset.train_images, ctx.query_pool)
  return strategies.ranked(ctx, scores, budget)
