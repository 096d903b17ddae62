"""One active-learning cycle as one function: train, evaluate, score, select.

`run_cycle(experiment, state, dataset) -> (new_state, record)` takes the run
between two cycles (CycleState) and returns the next one, touching no files.
The driver (driver.py) adds setup, resume, the loop and the run directory
(rundir.py); benchmarks time the same function through its record.
"""

import dataclasses
import time
from typing import Any, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from tod_jax import (batches, initializers, loss_forms, loss_prediction, metric_writers, metrics,
                     models, precision, pretrained, snapshots, strategies, train)
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError
from tod_jax.scoring import Scorer, shared_scorer
from tod_jax.sharded_map import make_mesh
from tod_jax.train_state import (TrainState, create_optimizer, create_train_state,
                                 init_variables, lr_decay_step)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What stays fixed for a whole run; built once by `setup`."""
  config: ml_collections.ConfigDict
  model: nn.Module
  scorer: Scorer
  mesh: Mesh
  initial_size: int  # Labeled samples before cycle 1.
  budget: int  # Samples queried per cycle.
  init_variables: dict  # w_0 = {'params', 'batch_stats'}.
  init_loss_head: Any  # LL4AL's module at the start, or None.
  snapshot_intervals: tuple[str, ...]  # In-cycle snapshots kept (Fig. 7, cod_interval).


@dataclasses.dataclass(frozen=True)
class CycleState:
  """The run between two cycles: what the next cycle needs, and what a checkpoint holds."""
  cycle: int  # Cycles completed (0: none yet).
  labeled: np.ndarray  # Sorted pool indices the next cycle trains on.
  variables: dict  # w_c, the last cycle's model (w_0 at first): COD's w_{c-1} next cycle.
  ema_variables: Optional[dict]  # The EMA model of Eq. 6; None: a copy of `variables`.
  loss_head: Any  # LL4AL's module params, or None.
  step: int  # Train steps so far (the EMA warm-up counts on across cycles).
  key: chex.PRNGKey  # PRNG key of the next cycle's training.
  strategy_state: dict  # The strategy's own arrays (e.g. kept COD outputs).
  records: tuple  # One metrics dict per completed cycle.

  def replace(self, **changes) -> 'CycleState':
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class CycleRecord:
  """What one cycle produced besides its new state."""
  metrics: dict  # The cycle's line of metrics.jsonl (with per-phase seconds).
  queried: np.ndarray  # [budget] pool indices, in query order.
  query_scores: Optional[np.ndarray]  # The strategy's score of each queried index, or None.
  query_order: str  # 'highest' or 'lowest': which end of the scores the query took.
  snapshots: dict  # Interval spec -> variables that far before the cycle's end.
  snapshot_steps_back: dict  # Interval spec -> steps back (clipped to the cycle).


def plan_sizes(config: ml_collections.ConfigDict, pool_size: int,
               initial: Optional[int] = None) -> tuple[int, int]:
  """(initial labeled size, budget per cycle); raises if the pool cannot supply them.

  `initial` is the seed set's size when it is given (a person's labels), else
  config.initial_fraction of the pool.
  """
  initial = initial or max(1, int(round(config.initial_fraction * pool_size)))
  budget = int(round(config.budget_fraction * pool_size))
  needed = initial + budget * config.num_cycles  # Every cycle, the last too, queries.
  if needed > pool_size or (config.semi and needed == pool_size):
    raise ConfigError(
        f'{config.num_cycles} cycles need {needed} labeled samples ({initial} + '
        f'{config.num_cycles} x {budget}) but the pool has {pool_size}' +
        (' and the TOD loss needs unlabeled samples' if needed == pool_size else '') +
        '; lower --config.budget_fraction, --config.initial_fraction or --config.num_cycles.')
  return initial, budget


def snapshot_intervals(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Intervals of the in-cycle snapshots a run keeps: snapshot_intervals and COD's interval."""
  specs = snapshots.parse_specs(config.snapshot_intervals)
  if config.cod_interval != 'cycle' and config.cod_interval not in specs:
    specs += snapshots.parse_specs(config.cod_interval)
  return specs


def model_input_shape(config: ml_collections.ConfigDict, dataset: Dataset) -> tuple[int, ...]:
  """The shape of one input image the model is initialised on."""
  if dataset.is_segmentation and config.crop_size:  # Fully convolutional: init on a crop.
    return (config.crop_size, config.crop_size, dataset.image_shape[-1])
  return dataset.image_shape


def check_intermediates(config: ml_collections.ConfigDict, model: nn.Module,
                        dataset: Dataset) -> None:
  """Raises ConfigError if the model does not sow what the strategy or the TOD loss reads."""
  features, stages = [], []
  if loss_forms.uses_consistency_head(config):
    features.append(f'tod_loss_form={config.tod_loss_form!r}')
  if strategies.reads_features(config.strategy):
    features.append(f'strategy {config.strategy!r}')
  if strategies.needs_loss_head(config.strategy):
    stages.append(f"strategy {config.strategy!r} (LL4AL's module)")
  models.check_intermediates(config.model, model, model_input_shape(config, dataset),
                             {models.FEATURES: features, models.STAGES: stages})


def initial_variables(config: ml_collections.ConfigDict, model: nn.Module,
                      dataset: Dataset) -> tuple[dict, Any]:
  """(w_0 = {'params', 'batch_stats'}, LL4AL's initial module params or None) from config.seed
  and, if set, the weights of config.init_checkpoint."""
  base_key = jax.random.PRNGKey(config.seed)
  input_shape = model_input_shape(config, dataset)
  init_vars = init_variables(model, jax.random.fold_in(base_key, 0), input_shape,
                             loss_forms.uses_consistency_head(config), config.param_init)
  if config.init_checkpoint:  # Pretrained weights; a head of another shape stays as initialised.
    init_vars, _ = pretrained.load(config.init_checkpoint, config.model, init_vars)
  init_head = None
  if strategies.needs_loss_head(config.strategy):  # LL4AL's module, trained with the model.
    init_head = initializers.apply(
        config.param_init, loss_prediction.init_params(
            model, init_vars, jax.random.fold_in(base_key, 2), input_shape),
        jax.random.fold_in(base_key, 3))
  return init_vars, init_head


def train_dtype(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> str:
  """The train step's compute dtype: config.compute_dtype, 'auto' resolved for the mesh's
  platform (tod_jax.precision.train_dtype)."""
  mesh = mesh if mesh is not None else make_mesh()
  return precision.train_dtype(config.compute_dtype, mesh.devices.flat[0].platform)


def setup(config: ml_collections.ConfigDict, dataset: Dataset, mesh: Optional[Mesh] = None,
          initial_size: Optional[int] = None) -> Experiment:
  """Checks `config` against `dataset` and builds the run's model, scorer and w_0."""
  if dataset.is_segmentation and config.crop_size > min(dataset.image_shape[:2]):
    raise ConfigError(f'crop_size {config.crop_size} exceeds the {dataset.name} images '
                      f'{dataset.image_shape[:2]}; lower --config.crop_size (0: no crop).')
  strategies.check_dataset(config.strategy, dataset)
  if dataset.is_segmentation and loss_forms.uses_consistency_head(config):
    raise ConfigError(f"tod_loss_form={config.tod_loss_form!r} needs a classification dataset; "
                      "set --config.tod_loss_form=paper for segmentation.")
  initial_size, budget = plan_sizes(config, dataset.pool_size, initial_size)
  mesh = mesh if mesh is not None else make_mesh()  # Every device of every process.
  train.check_batch_sizes(config, mesh)
  model = models.create_model(config.model, dataset.num_classes, config.dropout_rate,
                              train_dtype(config, mesh))
  check_intermediates(config, model, dataset)
  # Scores and test metrics from a float32 model, whatever the train step computes in.
  float32_model = models.create_model(config.model, dataset.num_classes, config.dropout_rate)
  scorer = shared_scorer(float32_model, tuple(dataset.mean), tuple(dataset.std), config.score_output,
                         config.score_chunk_size, mesh, config.precision.score,
                         config.precision.evaluate)
  init_vars, init_head = initial_variables(config, model, dataset)
  return Experiment(config, model, scorer, mesh, initial_size, budget, init_vars, init_head,
                    snapshot_intervals(config))


def initial_state(experiment: Experiment, labeled: np.ndarray) -> CycleState:
  """The run before cycle 1: w_0, the initial labeled set, no records."""
  base_key = jax.random.PRNGKey(experiment.config.seed)
  return CycleState(0, np.sort(np.asarray(labeled, np.int64)), experiment.init_variables,
                    None, experiment.init_loss_head, 0, jax.random.fold_in(base_key, 1), {}, ())


def evaluate_models(scorer: Scorer, variables: tuple[dict, ...],
                    dataset: Dataset) -> list[dict]:
  """`evaluate` of each model; classification runs them in one pass over the test set."""
  if len(dataset.test_labels) and not dataset.is_segmentation:
    return [{'accuracy': a} for a in scorer.accuracies(variables, dataset.test_images,
                                                        dataset.test_labels)]
  return [evaluate(scorer, v, dataset) for v in variables]


def evaluate(scorer: Scorer, variables: dict, dataset: Dataset) -> dict:
  """Test-set metrics: {'accuracy'}; segmentation adds {'miou', 'per_class_iou'}.

  Segmentation accuracy is pixel accuracy; ignored pixels are not counted, and a
  class absent from both labels and predictions has IoU None (NaN in NumPy).
  Without test samples (an image folder with no test/) the accuracy is None.
  """
  if not len(dataset.test_labels):
    return {'accuracy': None}
  if not dataset.is_segmentation:
    return {'accuracy': scorer.accuracy(variables, dataset.test_images, dataset.test_labels)}
  confusion = scorer.confusion(variables, dataset.test_images, dataset.test_labels,
                               dataset.num_classes, dataset.ignore_label)
  iou = metrics.per_class_iou(confusion)
  return {'accuracy': metrics.accuracy(confusion), 'miou': metrics.mean_iou(confusion),
          'per_class_iou': [None if np.isnan(v) else float(v) for v in iou]}


@dataclasses.dataclass(frozen=True)
class _Training:
  """What a cycle's training produced."""
  state: TrainState  # w_c and its EMA model.
  metrics: dict  # The last epoch's mean metrics.
  snapshots: snapshots.Snapshots  # Copies of the model some steps before the end.
  seconds: dict  # 'train' and 'train_first_step'.


@dataclasses.dataclass(frozen=True)
class _Query:
  """A cycle's query and the candidates it chose from."""
  result: strategies.QueryResult
  pool: np.ndarray  # This cycle's unlabeled pool, or a random subset of it.


def _train(experiment: Experiment, state: CycleState, dataset: Dataset, unlabeled: np.ndarray,
           cycle: int, writer: metric_writers.MetricWriter) -> _Training:
  """This cycle's training from w_{c-1} (or w_0 with reinit_each_cycle). The input state is
  left intact (the step donates copies)."""
  config = experiment.config
  start, ema, head = state.variables, state.ema_variables, state.loss_head
  if config.reinit_each_cycle:
    start, ema, head = experiment.init_variables, None, experiment.init_loss_head
  copy = lambda tree: None if tree is None else jax.tree.map(jnp.copy, tree)
  per_epoch = batches.steps_per_epoch(len(state.labeled), config.batch_size)
  n_steps = config.num_epochs * per_epoch
  cyclic = config.semi and config.loss_teacher == 'cyclic'
  train_state = create_train_state(
      experiment.model, copy(start), create_optimizer(config), copy(ema), state.step,
      decay_step=lr_decay_step(config, n_steps), loss_head_params=copy(head),
      teacher_variables=state.variables if cyclic else None)
  cycle_snapshots = snapshots.Snapshots(experiment.snapshot_intervals, per_epoch, n_steps,
                                        start, clip=True)
  begin, first = time.perf_counter(), {}

  def on_step(ts: TrainState, done: int) -> None:
    cycle_snapshots.on_step(ts, done)
    if done == 1:  # A dispatch of its own (stop_at), so this times one step.
      jax.block_until_ready(ts.step)
      first['seconds'] = time.perf_counter() - begin

  inputs = train.CycleInputs(dataset, state.labeled, unlabeled,
                             np.random.default_rng([config.seed, cycle]), state.key, cycle)
  trained, metrics = train.train_cycle(train_state, inputs, config, mesh=experiment.mesh,
                                       writer=writer, on_step=on_step,
                                       stop_at={1, *cycle_snapshots.steps})
  jax.block_until_ready(trained)
  return _Training(trained, metrics, cycle_snapshots,
                   {'train': time.perf_counter() - begin, 'train_first_step': first['seconds']})


def _query(experiment: Experiment, state: CycleState, training: _Training, dataset: Dataset,
           unlabeled: np.ndarray, cycle: int) -> _Query:
  """The strategy's query over this cycle's unlabeled pool (or a random subset)."""
  config = experiment.config
  # The query draws from its own generator: training's draws (unlabeled batches) must
  # not change which samples a random query takes.
  rng = np.random.default_rng([config.seed, cycle, 1])
  query_pool = unlabeled
  if config.pool_subset and config.pool_subset < len(unlabeled):
    query_pool = np.sort(rng.choice(unlabeled, config.pool_subset, replace=False))
  if experiment.budget > len(query_pool):
    raise ConfigError(f'Budget {experiment.budget} exceeds the {len(query_pool)} candidates; '
                      'raise --config.pool_subset or lower --config.budget_fraction.')
  # COD's w_{c-1}: the last cycle's model, or a snapshot config.cod_interval before the end.
  previous = (state.variables if config.cod_interval == 'cycle'
              else training.snapshots.variables[config.cod_interval])
  ctx = strategies.QueryContext(config, dataset, state.labeled, query_pool, training.state,
                                previous, experiment.scorer, rng, cycle, state.strategy_state)
  result = strategies.get_strategy(config.strategy)(ctx, experiment.budget)
  _check_query(result, query_pool, experiment.budget, config.strategy)
  return _Query(result, query_pool)


def _check_query(result: strategies.QueryResult, query_pool: np.ndarray, budget: int,
                 name: str) -> None:
  queried = np.asarray(result.indices)
  scores_ok = result.scores is None or np.shape(result.scores) == query_pool.shape
  if (queried.shape != (budget,) or len(np.unique(queried)) != budget
      or not np.isin(queried, query_pool).all() or not scores_ok):
    raise RuntimeError(f'Strategy {name!r} returned {queried.shape} indices; it must return '
                       f'{budget} distinct unlabeled candidates (and one score per candidate '
                       'or None). This is a bug in the strategy.')


def run_cycle(experiment: Experiment, state: CycleState, dataset: Dataset, *,
              writer: metric_writers.MetricWriter = metric_writers.NullWriter()
              ) -> tuple[CycleState, CycleRecord]:
  """Cycle state.cycle + 1: train, evaluate, score, select. No file is written.

  Args:
    experiment: the run's fixed parts (`setup`).
    state: the run after the last cycle; state.labeled is the set to train on.
    dataset: the pool with its current labels (-1 where unknown).
    writer: where each epoch's training metrics go.
  Returns:
    The state after this cycle (labeled set grown by the query) and its record.
  """
  config, cycle = experiment.config, state.cycle + 1
  unlabeled = np.setdiff1d(np.arange(dataset.pool_size), state.labeled)
  training = _train(experiment, state, dataset, unlabeled, cycle, writer)
  trained, seconds = training.state, dict(training.seconds)
  begin = time.perf_counter()
  evaluation = dict(zip(('model', 'ema'), evaluate_models(
      experiment.scorer, (trained.variables, trained.ema_variables), dataset)))
  seconds['evaluate'] = time.perf_counter() - begin
  begin = time.perf_counter()
  query = _query(experiment, state, training, dataset, unlabeled, cycle)
  seconds['score'] = time.perf_counter() - begin
  record = _record(experiment, state, dataset, training, evaluation, query, seconds)
  result = query.result
  new_state = CycleState(
      cycle, np.union1d(state.labeled, result.indices).astype(np.int64), trained.variables,
      trained.ema_variables, trained.loss_head_params, int(trained.step),
      jax.random.fold_in(jax.random.PRNGKey(config.seed), cycle + 1),
      state.strategy_state if result.strategy_state is None else result.strategy_state,
      state.records + (record.metrics,))
  return new_state, record


def _record(experiment: Experiment, state: CycleState, dataset: Dataset, training: _Training,
            evaluation: dict, query: _Query, seconds: dict) -> CycleRecord:
  """The cycle's metrics line and query (each queried index with its score)."""
  config, labeled, result = experiment.config, state.labeled, query.result
  test, ema_test = evaluation['model'], evaluation['ema']
  queried = np.asarray(result.indices, np.int64)
  scores = (None if result.scores is None else
            np.asarray(result.scores, np.float64)[np.searchsorted(query.pool, queried)])
  line = {'cycle': state.cycle + 1, 'num_labeled': int(len(labeled)),
          'labeled_fraction': len(labeled) / dataset.pool_size,
          'test_accuracy': test['accuracy'], 'ema_test_accuracy': ema_test['accuracy'],
          'train_loss': training.metrics.get('loss'), 'strategy': config.strategy,
          'seed': config.seed, 'dataset': dataset.name,
          'train_seconds': seconds['train'],
          'train_first_step_seconds': seconds['train_first_step'],
          'evaluate_seconds': seconds['evaluate'], 'score_seconds': seconds['score'],
          'num_queried': int(len(queried))}
  if dataset.is_segmentation:
    line.update(test_miou=test['miou'], ema_test_miou=ema_test['miou'],
                per_class_iou=test['per_class_iou'])
  return CycleRecord(line, queried, scores, result.order, dict(training.snapshots.variables),
                     dict(training.snapshots.steps_back))
