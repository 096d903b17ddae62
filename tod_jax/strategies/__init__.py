"""Query strategies, registered by name; each maps a QueryContext to pool indices.

A strategy is `query(ctx: QueryContext, budget: int) -> np.ndarray` returning
`budget` distinct indices drawn from `ctx.candidates`. Add one by writing a
module here that decorates its function with `@register('name')` and importing
it below. A strategy may name a config check (run before any data is loaded)
and may ask for LL4AL's loss prediction module to be trained with the model.
"""

import dataclasses
from typing import Any, Callable, Optional

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
  cycle: int = 1  # The cycle that trained `state` (1-based).
  # A strategy's own arrays carried across cycles and checkpointed with the run (e.g. the
  # kept COD outputs); strategies read and replace entries in place.
  strategy_state: dict = dataclasses.field(default_factory=dict)
  # What a strategy reports back: 'scores', [len(candidates)] float aligned with
  # `candidates`, if it ranks by a score (shown to the person who labels the query).
  report: dict = dataclasses.field(default_factory=dict)


Strategy = Callable[[QueryContext, int], np.ndarray]
ConfigCheck = Callable[[ml_collections.ConfigDict], None]
STRATEGIES: dict[str, Strategy] = {}
CONFIG_CHECKS: dict[str, ConfigCheck] = {}
LOSS_HEAD_STRATEGIES: set[str] = set()


def register(name: str, *, check: Optional[ConfigCheck] = None,
             loss_head: bool = False) -> Callable[[Strategy], Strategy]:
  """Registers a strategy; `check(config)` raises on configs it cannot use."""
  def wrap(fn: Strategy) -> Strategy:
    STRATEGIES[name] = fn
    if check is not None:
      CONFIG_CHECKS[name] = check
    if loss_head:
      LOSS_HEAD_STRATEGIES.add(name)
    return fn
  return wrap


def get_strategy(name: str) -> Strategy:
  if name not in STRATEGIES:
    raise ValueError(f'Unknown strategy {name!r}; set --config.strategy to one of '
                     f'{sorted(STRATEGIES)}.')
  return STRATEGIES[name]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises if config.strategy is unknown or cannot run with `config`."""
  get_strategy(config.strategy)
  if config.strategy in CONFIG_CHECKS:
    CONFIG_CHECKS[config.strategy](config)


def needs_loss_head(name: str) -> bool:
  """Whether strategy `name` trains LL4AL's loss prediction module with the model."""
  return name in LOSS_HEAD_STRATEGIES


# Registration by import.
from tod_jax.strategies import (  # noqa: E402,F401
    cod, coreset, emaod, ll4al, mc_dropout, random_sampling, uncertainty_sampling)
