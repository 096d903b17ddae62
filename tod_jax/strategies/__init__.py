"""Query strategies, registered by name; each maps a QueryContext to pool indices.

A strategy is `query(ctx: QueryContext, budget: int) -> np.ndarray` returning
`budget` distinct indices drawn from `ctx.candidates`. Add one by writing a
module here that decorates its function with `@register('name')` and importing
it below.
"""

import dataclasses
from typing import Any, Callable

import ml_collections
import numpy as np

from tod_jax.input_pipeline import Dataset
from tod_jax.scoring import Scorer
from tod_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class QueryContext:
  """Everything a strategy may look at after a cycle's training."""
  config: ml_collections.ConfigDict
  dataset: Dataset
  labeled: np.ndarray  # Labeled pool indices.
  candidates: np.ndarray  # Unlabeled pool indices eligible this cycle (maybe a subset).
  state: TrainState  # The model w_c trained in this cycle (and its EMA model).
  baseline_variables: Any  # {'params', 'batch_stats'} of w_{c-1} (cycle 1: initial weights).
  scorer: Scorer
  rng: np.random.Generator
  # A strategy's own arrays carried across cycles and checkpointed with the run (e.g. the
  # kept COD outputs); strategies read and replace entries in place.
  strategy_state: dict = dataclasses.field(default_factory=dict)
  # What a strategy reports back: 'scores', [len(candidates)] float aligned with
  # `candidates`, if it ranks by a score (shown to the person who labels the query).
  report: dict = dataclasses.field(default_factory=dict)


Strategy = Callable[[QueryContext, int], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
  def wrap(fn: Strategy) -> Strategy:
    STRATEGIES[name] = fn
    return fn
  return wrap


def get_strategy(name: str) -> Strategy:
  if name not in STRATEGIES:
    raise ValueError(f'Unknown strategy {name!r}; set --config.strategy to one of '
                     f'{sorted(STRATEGIES)}.')
  return STRATEGIES[name]


# Registration by import.
from tod_jax.strategies import cod, random_sampling  # noqa: E402,F401
