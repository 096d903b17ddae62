"""`cod`: the largest cyclic output discrepancy between w_c and w_{c-1} (Eq. 5).

With config.kept_outputs.enabled, w_{c-1}'s outputs are kept from the previous cycle's
query, so each cycle runs one forward pass per pool image (kept_outputs.py).

Cycle 1 compares with the network's own initial weights, whose softmax is nearly
flat. config.cod_first_cycle='lowest' (default, the authors' code) then queries the
*lowest* scores, the samples the trained model is least sure of; 'highest' (the
paper's text read literally) queries the largest, which on digits are the most
confident samples (docs/method.md, "Where tod_jax follows the paper").

config.cod_interval='1epoch' (or '5steps', ...) compares w_c with a snapshot of the
same cycle that far before its end instead of w_{c-1} (beyond the paper; the
baseline is trained, so every cycle queries the highest scores).
"""

from tod_jax import kept_outputs, snapshots, strategies
from tod_jax.errors import ConfigError


def _check(config) -> None:
  if config.cod_first_cycle not in ('highest', 'lowest'):
    raise ConfigError(f'Unknown cod_first_cycle {config.cod_first_cycle!r}; set '
                     "--config.cod_first_cycle to 'lowest' (authors' code) or 'highest' "
                     "(paper's text).")
  if config.cod_interval != 'cycle':
    snapshots.parse_specs(config.cod_interval)


def takes_lowest(config, cycle: int) -> bool:
  """Whether cycle `cycle`'s COD query takes the lowest scores (cycle 1 vs initial weights)."""
  return cycle == 1 and config.cod_interval == 'cycle' and config.cod_first_cycle == 'lowest'


@strategies.register('cod', check=_check)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  images, state = ctx.dataset.train_images, ctx.strategy_state
  if ctx.config.kept_outputs.enabled and ctx.config.cod_interval == 'cycle':
    scores, kept = kept_outputs.cod_scores(
        ctx.scorer, ctx.state.variables, ctx.previous_variables, images, ctx.query_pool,
        state.get(kept_outputs.KEPT), dtype=ctx.config.kept_outputs.dtype,
        max_bytes=ctx.config.kept_outputs.max_bytes)
    state = {k: v for k, v in state.items() if k != kept_outputs.KEPT}
    if kept is not None:
      state[kept_outputs.KEPT] = kept
  else:
    scores = ctx.scorer.cod(ctx.state.variables, ctx.previous_variables, images,
                            ctx.query_pool)
  return strategies.ranked(ctx, scores, budget, takes_lowest(ctx.config, ctx.cycle), state)
