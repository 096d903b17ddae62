"""`entropy`, `margin`, `least_confidence`: the most uncertain softmax predictions of w_c.

Segmentation: the measure per pixel, averaged over all pixels of the image
(Scorer.uncertainty), so an image scores its mean pixel uncertainty.
"""

import functools
from typing import Callable

from tod_jax import strategies, uncertainty


def query(measure: Callable, ctx: 'strategies.QueryContext',
          budget: int) -> 'strategies.QueryResult':
  """Top-b candidates by `measure`(softmax(logits)) of the trained model."""
  scores = ctx.scorer.uncertainty(ctx.state.variables, measure, ctx.dataset.train_images,
                                  ctx.query_pool)
  return strategies.ranked(ctx, scores, budget)


for _name, _measure in (('entropy', uncertainty.entropy), ('margin', uncertainty.margin),
                        ('least_confidence', uncertainty.least_confidence)):
  strategies.register(_name)(functools.partial(query, _measure))
