"""`vaal`: Variational Adversarial Active Learning (Sinha et al., ICCV 2019).

Each query first trains VAAL's VAE and discriminator (tod_jax/vaal.py) on this
cycle's labeled and unlabeled pool, then takes the candidates with the largest
discriminator probability of "unlabeled", 1 - D(mu) (the per-candidate score).
The networks and their Adam states carry over from cycle to cycle, as in VAAL's
code, in the strategy state the run checkpoints: a resumed run continues exactly.
Its training counts in the query's time (score_seconds, Table VI).
"""

import math

import jax
import numpy as np

from tod_jax import batches, strategies
from tod_jax import vaal as vaal_lib
from tod_jax.errors import ConfigError

KEY = 'vaal'  # Key of VAAL's networks in the run's strategy state.
_POSITIVE = ('latent_size', 'width', 'discriminator_width', 'batch_size', 'learning_rate',
             'vae_steps', 'discriminator_steps')


def _check(config) -> None:
  for field in _POSITIVE:
    if not config.vaal[field] > 0:
      raise ConfigError(f'vaal.{field} must be positive for strategy vaal; got '
                        f'{config.vaal[field]}; set --config.vaal.{field}.')
  for field in ('beta', 'adversary_weight', 'iteration_fraction'):
    if config.vaal[field] < 0:
      raise ConfigError(f'vaal.{field} must be at least 0 for strategy vaal; got '
                        f'{config.vaal[field]}; set --config.vaal.{field}.')


def num_iterations(config, num_labeled: int) -> int:
  """VAAL iterations this cycle: vaal.iteration_fraction x the task model's steps, rounded
  up (at least one for any positive fraction)."""
  task_steps = config.num_epochs * batches.steps_per_epoch(num_labeled, config.batch_size)
  return math.ceil(config.vaal.iteration_fraction * task_steps)


@strategies.register('vaal', check=_check)
def query(ctx: 'strategies.QueryContext', budget: int) -> 'strategies.QueryResult':
  config, dataset = ctx.config, ctx.dataset
  vaal = vaal_lib.from_config(config, dataset.train_images.shape[1:], dataset.mean,
                              dataset.std)
  # Every random draw comes from the cycle's query generator: a rerun draws the same.
  init_seed, train_seed, batch_seed = ctx.rng.integers(0, 2**31 - 1, size=3)
  kept = ctx.strategy_state.get(KEY)
  state = (vaal.init(jax.random.PRNGKey(init_seed)) if kept is None
           else vaal.from_arrays(kept))
  # The discriminator learns the whole unlabeled pool, whatever subset the query scores.
  unlabeled = np.setdiff1d(np.arange(dataset.pool_size), ctx.labeled)
  with jax.default_matmul_precision(config.precision.train):
    state, _ = vaal_lib.train(vaal, state, dataset.train_images, ctx.labeled, unlabeled,
                              num_iterations(config, len(ctx.labeled)), config.vaal.batch_size,
                              np.random.default_rng(batch_seed), jax.random.PRNGKey(train_seed))
  scores = vaal_lib.unlabeled_probability(vaal, state, dataset.train_images, ctx.query_pool,
                                          config.score_chunk_size, ctx.scorer.mesh,
                                          config.precision.score)
  return strategies.ranked(ctx, scores, budget,
                           strategy_state={**ctx.strategy_state, KEY: vaal.to_arrays(state)})
