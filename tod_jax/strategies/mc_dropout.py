"""`mc_dropout` and `bald`: T dropout passes of w_c (Gal et al. 2017).

`mc_dropout` queries the largest entropy of the mean prediction, `bald` the
largest mutual information between prediction and weights. Segmentation: both
per pixel (the mean over passes too), then averaged over all pixels of the image.
"""

import functools
from typing import Callable

import jax
import ml_collections

from tod_jax import strategies, uncertainty
from tod_jax.errors import ConfigError


def check(config: ml_collections.ConfigDict) -> None:
  if config.dropout_rate <= 0 or config.mc_samples < 2:
    raise ConfigError(f'Strategy {config.strategy!r} needs dropout and several passes; got '
                     f'dropout_rate={config.dropout_rate}, mc_samples={config.mc_samples}; set '
                     '--config.dropout_rate (e.g. 0.3) and --config.mc_samples >= 2.')


def query(measure: Callable, ctx: 'strategies.QueryContext',
          budget: int) -> 'strategies.QueryResult':
  """Top-b candidates by `measure`([n, (H, W,) T, K] MC probabilities), one score per image."""
  rng = jax.random.PRNGKey(int(ctx.rng.integers(2**31)))
  scores = ctx.scorer.mc_uncertainty(ctx.state.variables, rng, ctx.config.mc_samples, measure,
                                     ctx.dataset.train_images, ctx.query_pool)
  return strategies.ranked(ctx, scores, budget)


def mean_entropy(mc_probs):
  """Entropy of the mean of T passes. [..., T, K] -> [...]."""
  return uncertainty.entropy(mc_probs.mean(axis=-2))


strategies.register('mc_dropout', check=check)(functools.partial(query, mean_entropy))
strategies.register('bald', check=check)(functools.partial(query, uncertainty.bald))
