"""Query strategies, registered by name; each maps a QueryContext to a QueryResult.

A strategy is `query(ctx: QueryContext, budget: int) -> QueryResult`: `budget`
distinct indices drawn from `ctx.query_pool`, its per-candidate scores (None for
random) and its new strategy state. Strategies read the context and return;
they never write into it. Add one by writing a module here that decorates its
function with `@register('name')` and importing it below (or call `register`
from your own code). A strategy may name a config check (run before any data
is loaded), may ask for LL4AL's loss prediction module to be trained with
the model, and may refuse segmentation datasets (checked by cycle.setup).
"""

import dataclasses
from typing import Any, Callable, Optional

import ml_collections
import numpy as np

from tod_jax import ranking
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError
from tod_jax.registry import Registry
from tod_jax.scoring import Scorer
from tod_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class QueryContext:
  """Everything a strategy may look at after a cycle's training (read only)."""
  config: ml_collections.ConfigDict
  dataset: Dataset
  labeled: np.ndarray  # Labeled pool indices.
  query_pool: np.ndarray  # Sorted unlabeled pool indices a query may take (maybe a subset).
  state: TrainState  # The model w_c trained in this cycle (and its EMA model).
  previous_variables: Any  # {'params', 'batch_stats'} COD compares with (w_{c-1}; cycle 1: w_0).
  scorer: Scorer
  rng: np.random.Generator
  cycle: int = 1  # The cycle that trained `state` (1-based).
  # The strategy's own arrays from the last cycle (e.g. kept COD outputs), checkpointed
  # with the run; a strategy returns its new state in its QueryResult.
  strategy_state: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class QueryResult:
  """What a strategy returns."""
  indices: np.ndarray  # [budget] int64 pool indices, in query order.
  scores: Optional[np.ndarray] = None  # [len(query_pool)] per-candidate score, or None.
  strategy_state: Optional[dict] = None  # The new strategy state; None: unchanged.
  # Which end of `scores` the query took: 'highest' or 'lowest'; 'neither' when the picks
  # are not a top-b of the scores (e.g. BADGE draws them).
  order: str = 'highest'


def ranked(ctx: QueryContext, scores: np.ndarray, budget: int, lowest: bool = False,
           strategy_state: Optional[dict] = None) -> QueryResult:
  """The QueryResult of the `budget` highest (or lowest) scores of ctx.query_pool."""
  scores = np.asarray(scores)
  indices = ranking.top_b(-scores if lowest else scores, ctx.query_pool, budget)
  return QueryResult(indices, scores, strategy_state, 'lowest' if lowest else 'highest')


Strategy = Callable[[QueryContext, int], QueryResult]
ConfigCheck = Callable[[ml_collections.ConfigDict], None]


@dataclasses.dataclass(frozen=True)
class StrategySpec:
  query: Strategy
  check: Optional[ConfigCheck] = None
  loss_head: bool = False  # Train LL4AL's loss prediction module with the model.
  features: bool = False  # Reads the model's sown 'features' (checked when a run starts).
  classification_only: bool = False  # Refuse segmentation datasets (check_dataset).


STRATEGIES: Registry[StrategySpec] = Registry('strategy', 'strategy')


def register(name: str, *, check: Optional[ConfigCheck] = None, loss_head: bool = False,
             features: bool = False, classification_only: bool = False
             ) -> Callable[[Strategy], Strategy]:
  """Registers a strategy; `check(config)` raises on configs it cannot use.

  `loss_head`: the run trains LL4AL's module with the model (it reads the model's sown
  'stage<i>'); `features`: the strategy reads the model's sown pooled 'features';
  `classification_only`: it cannot query segmentation datasets (check_dataset).
  """
  def wrap(fn: Strategy) -> Strategy:
    STRATEGIES.register(name, StrategySpec(fn, check, loss_head, features, classification_only))
    return fn
  return wrap


def get_strategy(name: str) -> Strategy:
  return STRATEGIES.get(name).query


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises if config.strategy is unknown or cannot run with `config`."""
  spec = STRATEGIES.get(config.strategy)
  if spec.check is not None:
    spec.check(config)


def check_dataset(name: str, dataset: Dataset) -> None:
  """Raises if strategy `name` cannot query `dataset` (segmentation for a classifier-only one)."""
  if dataset.is_segmentation and STRATEGIES.get(name).classification_only:
    raise ConfigError(
        f'Strategy {name!r} needs a classification dataset, but {dataset.name!r} is '
        "segmentation (per-pixel logits); set --config.strategy to one that handles "
        "segmentation, e.g. 'cod', 'entropy' or 'coreset'.")


def reads_features(name: str) -> bool:
  """Whether strategy `name` reads the model's sown pooled 'features'."""
  return STRATEGIES.get(name).features


def needs_loss_head(name: str) -> bool:
  """Whether strategy `name` trains LL4AL's loss prediction module with the model."""
  return STRATEGIES.get(name).loss_head


# Registration by import.
from tod_jax.strategies import (  # noqa: E402,F401
    badge, cod, coreset, emaod, ll4al, mc_dropout, random_sampling, uncertainty_sampling, vaal)
