"""`entropy`, `margin`, `least_confidence`: the most uncertain softmax predictions of w_c."""

import functools
from typing import Callable

import numpy as np

from tod_jax import selection, strategies, uncertainty


def query(measure: Callable, ctx: 'strategies.QueryContext', budget: int) -> np.ndarray:
  """Top-b candidates by `measure`(softmax(logits)) of the trained model."""
  scores = ctx.scorer.uncertainty(ctx.state.variables, measure, ctx.dataset.train_images,
                                  ctx.candidates)
  return selection.top_b(scores, ctx.candidates, budget)


for _name, _measure in (('entropy', uncertainty.entropy), ('margin', uncertainty.margin),
                        ('least_confidence', uncertainty.least_confidence)):
  strategies.register(_name)(functools.partial(query, _measure))
