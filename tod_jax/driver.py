"""The active-learning loop: train, evaluate, score, query, checkpoint; resumable.

config -> data -> state -> train -> score/select -> checkpoint -> metrics.
"""

import dataclasses
import json
import math
import os
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from tod_jax import (checkpointing, input_pipeline, label_noise, labels, loss_forms,
                     loss_prediction, metrics,
                     models, snapshots, strategies, tod, train)
from tod_jax.scoring import Scorer
from tod_jax.strategies import cod as cod_strategy
from tod_jax.sharded_map import make_mesh
from tod_jax.train_state import (create_optimizer, create_train_state, init_variables,
                                 lr_decay_step)

# Config fields that may change when a run is resumed.
RESUMABLE_CHANGES = frozenset(
    {'num_cycles', 'progress_bar', 'tensorboard', 'score_chunk_size', 'data_dir',
     'data_on_device', 'device_data_max_bytes', 'distributed', 'coordinator_address',
     'num_processes', 'process_id', 'num_cpu_devices'})
DTYPES = ('float32', 'bfloat16')  # Allowed for compute_dtype and kept_outputs_dtype.
# Config fields added after runs were saved: a config.json without one had this value.
ADDED_FIELDS = {'label_noise': 0.0, 'label_noise_seed': 0, 'extra_baselines': '',
                'compute_dtype': 'float32', 'tod_loss_form': 'paper', 'cod_interval': 'cycle'}


class ConfigMismatchError(ValueError):
  """The workdir holds a run made with another config."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any data is loaded, on names and values that cannot work."""
  if config.dataset not in input_pipeline.DATASETS:
    raise ValueError(f'Unknown dataset {config.dataset!r}; set --config.dataset to one of '
                     f'{sorted(input_pipeline.DATASETS)}.')
  if config.compute_dtype not in DTYPES:
    raise ValueError(f'compute_dtype {config.compute_dtype!r} is not supported; set '
                     f"--config.compute_dtype to one of {DTYPES}.")
  models.create_model(config.model, 2)
  strategies.check_config(config)
  labels.check_mode(config.labels)
  loss_forms.get(config.tod_loss_form)
  if config.loss_baseline not in ('ema', 'cyclic'):
    raise ValueError(f"Unknown loss_baseline {config.loss_baseline!r}; set "
                     "--config.loss_baseline to 'ema' (Eq. 7) or 'cyclic' (w_{c-1}).")
  for field in ('loss_output', 'score_output'):
    tod.model_output(jnp.zeros((1, 2)), config[field])
  if config.kept_outputs_dtype not in DTYPES:
    raise ValueError(f'kept_outputs_dtype {config.kept_outputs_dtype!r} is not supported; use '
                     f"{' or '.join(map(repr, DTYPES))}.")
  if not 0 < config.initial_fraction <= 1 or not 0 <= config.budget_fraction <= 1:
    raise ValueError('initial_fraction must be in (0, 1] and budget_fraction in [0, 1]; got '
                     f'{config.initial_fraction} and {config.budget_fraction}.')
  if config.num_cycles < 1 or config.num_epochs < 1 or config.batch_size < 1:
    raise ValueError('num_cycles, num_epochs and batch_size must be at least 1.')
  label_noise.check_probability(config.label_noise)
  snapshot_specs(config)
  input_pipeline.check_data_on_device(config.data_on_device)


def setup_devices(config: ml_collections.ConfigDict) -> None:
  """The devices a command line run uses; must run before any other JAX call.

  config.num_cpu_devices > 0 splits the host CPU into that many XLA devices
  (jax_num_cpu_devices), so the mesh runs data parallel over the cores: on the
  2-core dev machine ResNet-18 inference is about 1.6x faster with 2 than with
  XLA's one multi-threaded CPU device (README, "Benchmarks"). It has no effect
  on GPU/TPU. config.distributed: initialize_distributed.
  """
  if config.num_cpu_devices > 0:
    jax.config.update('jax_num_cpu_devices', config.num_cpu_devices)
  if config.distributed:
    initialize_distributed(config)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize for a multi-host run (config.distributed).

  Empty / negative fields are left to JAX, which reads them from the environment
  on TPU pod slices, SLURM and Open MPI; on other GPU hosts set all three.
  Must run before any other JAX call.
  """
  kwargs = {}
  if config.coordinator_address:
    kwargs['coordinator_address'] = config.coordinator_address
  if config.num_processes > 0:
    kwargs['num_processes'] = config.num_processes
  if config.process_id >= 0:
    kwargs['process_id'] = config.process_id
  jax.distributed.initialize(**kwargs)
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_writer() -> bool:
  """Only process 0 writes config.json, metrics.jsonl, TensorBoard and label files."""
  return jax.process_index() == 0


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
    raise ValueError(
        f'{config.num_cycles} cycles need {needed} labeled samples ({initial} + '
        f'{config.num_cycles} x {budget}) but the pool has {pool_size}' +
        (' and the TOD loss needs unlabeled samples' if needed == pool_size else '') +
        '; lower --config.budget_fraction, --config.initial_fraction or --config.num_cycles.')
  return initial, budget


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes workdir/config.json, or checks that a resumed run has the same config."""
  path = os.path.join(workdir, 'config.json')
  current = json.loads(config.to_json())
  if os.path.exists(path):
    saved = _saved_fields(path)
    diffs = sorted(k for k in set(saved) | set(current)
                   if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if diffs:
      detail = ', '.join(f'{k}: {saved.get(k)!r} there, {current.get(k)!r} now' for k in diffs)
      raise ConfigMismatchError(
          f'{workdir} holds a run with another config ({detail}); use a new --workdir, or '
          'the same config to resume it.')
  if is_writer():
    checkpointing.write_atomic(path, json.dumps(current, indent=2, sort_keys=True))


def _saved_fields(path: str) -> dict:
  """A saved config.json's fields; fields added since it was written get ADDED_FIELDS."""
  with open(path) as f:
    return {**ADDED_FIELDS, **json.load(f)}


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (workdir/config.json)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir} holds no tod_jax run; pass the '
                            '--workdir of a run started with python -m tod_jax.main.')
  return ml_collections.ConfigDict(_saved_fields(path))


def _check_query(queried: np.ndarray, candidates: np.ndarray, budget: int, name: str) -> None:
  queried = np.asarray(queried)
  if (queried.shape != (budget,) or len(np.unique(queried)) != budget
      or not np.isin(queried, candidates).all()):
    raise RuntimeError(f'Strategy {name!r} returned {queried.shape} indices; it must return '
                       f'{budget} distinct unlabeled candidates. This is a bug in the strategy.')


def evaluate(scorer: Scorer, variables: dict, dataset: input_pipeline.Dataset) -> dict:
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


def _check_crop(config: ml_collections.ConfigDict, dataset: input_pipeline.Dataset) -> None:
  if dataset.is_segmentation and config.crop_size > min(dataset.image_shape[:2]):
    raise ValueError(f'crop_size {config.crop_size} exceeds the {dataset.name} images '
                     f'{dataset.image_shape[:2]}; lower --config.crop_size (0: no crop).')


def snapshot_specs(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Intervals of the in-cycle snapshots a run keeps: extra_baselines and COD's interval."""
  specs = snapshots.parse_specs(config.extra_baselines)
  if config.cod_interval != 'cycle' and config.cod_interval not in specs:
    specs += snapshots.parse_specs(config.cod_interval)
  return specs


def _model_tree(state, key, extra_baselines: Optional[dict] = None) -> dict:
  tree = {'params': state.params, 'batch_stats': state.batch_stats,
          'ema_params': state.ema_params, 'ema_batch_stats': state.ema_batch_stats,
          'step': state.step, 'rng': jax.random.key_data(key)}
  if state.loss_head_params is not None:
    tree['loss_head_params'] = state.loss_head_params
  if extra_baselines:
    tree['extra_baselines'] = extra_baselines
  return tree


def load_run_dataset(config: ml_collections.ConfigDict, workdir: str) -> input_pipeline.Dataset:
  """The dataset a run trains on: config.dataset with config.label_noise applied (recorded)."""
  return label_noise.apply(config, input_pipeline.load_dataset(config), workdir)


def initial_variables(config: ml_collections.ConfigDict, model: nn.Module,
                      dataset: input_pipeline.Dataset) -> tuple[dict, Any]:
  """(w_0 = {'params', 'batch_stats'}, LL4AL's initial head params or None) from config.seed."""
  base_key = jax.random.PRNGKey(config.seed)
  input_shape = dataset.image_shape
  if dataset.is_segmentation and config.crop_size:  # Fully convolutional: init on a crop.
    input_shape = (config.crop_size, config.crop_size, input_shape[-1])
  init_vars = init_variables(model, jax.random.fold_in(base_key, 0), input_shape,
                             loss_forms.uses_consistency_head(config))
  init_head = None
  if strategies.needs_loss_head(config.strategy):  # LL4AL's module, trained with the model.
    init_head = loss_prediction.init_params(model, init_vars, jax.random.fold_in(base_key, 2),
                                            input_shape)
  return init_vars, init_head


def restore_cycle(checkpointer: checkpointing.Checkpointer, cycle: int,
                  config: ml_collections.ConfigDict, model: nn.Module, init_vars: dict,
                  init_head: Any) -> tuple[dict, dict, dict]:
  """Cycle `cycle`'s checkpoint of a run of `config`: (model tree, meta, strategy state).

  The tree has 'params', 'batch_stats' (w_c), the EMA model, 'step', 'rng', and
  'loss_head_params' / 'extra_baselines' ({spec: variables}) where the run has them.
  """
  state = create_train_state(model, init_vars, create_optimizer(config),
                             loss_head_params=init_head)
  specs = snapshot_specs(config)
  abstract = _model_tree(state, jax.random.PRNGKey(config.seed),
                         {spec: init_vars for spec in specs})
  return checkpointer.restore(cycle, abstract)


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) all cycles of `config` in `workdir`; returns the metrics records."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  check_workdir_config(workdir, config)
  dataset = load_run_dataset(config, workdir)
  label_source = labels.make_source(config, dataset, workdir)
  initial_size, budget = plan_sizes(config, dataset.pool_size, label_source.num_initial)
  _check_crop(config, dataset)
  mesh = make_mesh()  # Every device of every process: data parallel.
  train.check_batch_sizes(config, mesh)
  logging.info('Mesh: %d %s device(s), data parallel.', mesh.size, jax.devices()[0].platform)

  model = models.create_model(config.model, dataset.num_classes, config.dropout_rate,
                              config.compute_dtype)
  scorer = Scorer(model, dataset.mean, dataset.std, config.score_output,
                  config.score_chunk_size, mesh)
  strategy = strategies.get_strategy(config.strategy)
  base_key = jax.random.PRNGKey(config.seed)
  init_vars, init_head = initial_variables(config, model, dataset)
  extra_specs = snapshot_specs(config)

  checkpointer = checkpointing.Checkpointer(workdir)
  last = checkpointer.latest_cycle()
  if last is None:
    labeled = label_source.initial_labeled(initial_size, config.seed)
    variables, ema_variables, step, records, strategy_state = init_vars, None, 0, [], {}
    head_params = init_head
    baseline = jax.tree.map(jnp.copy, init_vars)
    key = jax.random.fold_in(base_key, 1)
    first_cycle = 1
  else:
    tree, meta, strategy_state = restore_cycle(checkpointer, last, config, model, init_vars,
                                               init_head)
    labeled, records = np.asarray(meta['labeled'], np.int64), meta['records']
    variables = {'params': tree['params'], 'batch_stats': tree['batch_stats']}
    ema_variables = {'params': tree['ema_params'], 'batch_stats': tree['ema_batch_stats']}
    step, key = int(tree['step']), jax.random.wrap_key_data(tree['rng'])
    head_params = tree.get('loss_head_params')
    baseline = jax.tree.map(jnp.copy, variables)
    first_cycle = last + 1
    if is_writer():
      label_source.record_query(last, meta)  # Completes a write that a crash cut short.
    logging.info('Resuming %s after cycle %d (%d labeled).', workdir, last, len(labeled))
  _write_metrics(workdir, records)

  writer = None
  if config.tensorboard and is_writer():
    import tensorboardX  # Optional at import time; listed in install_requires.
    writer = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))
  try:
    for cycle in label_source.cycles(first_cycle, config.num_cycles):
      if config.reinit_each_cycle:
        variables, ema_variables = jax.tree.map(jnp.copy, init_vars), None
        head_params = jax.tree.map(jnp.copy, init_head)
      labeled, train_labels = label_source.labeled_set(labeled)
      dataset = dataclasses.replace(dataset, train_labels=train_labels)
      unlabeled = np.setdiff1d(np.arange(dataset.pool_size), labeled)
      per_epoch = train.steps_per_epoch(len(labeled), config.batch_size)
      n_steps = config.num_epochs * per_epoch
      cyclic = config.semi and config.loss_baseline == 'cyclic'
      state = create_train_state(model, variables, create_optimizer(config), ema_variables,
                                 step, decay_step=lr_decay_step(config, n_steps),
                                 loss_head_params=head_params,
                                 loss_baseline=baseline if cyclic else None)
      np_rng = np.random.default_rng([config.seed, cycle])
      # The query draws from its own generator: training's draws (unlabeled batches) must
      # not change which samples a random query takes.
      query_rng = np.random.default_rng([config.seed, cycle, 1])
      # Fig. 7: copies of the model some steps before the cycle's end (clipped to the cycle).
      extra = snapshots.Snapshots(
          extra_specs, per_epoch, n_steps, variables, clip=True)

      start = time.perf_counter()
      state, train_metrics = train.train_cycle(
          state, dataset, labeled, unlabeled, config, np_rng, key, cycle=cycle, mesh=mesh,
          writer=writer, on_step=extra.on_step if extra_specs else None)
      jax.block_until_ready(state)
      train_seconds = time.perf_counter() - start
      test = evaluate(scorer, state.variables, dataset)
      ema_test = evaluate(scorer, state.ema_variables, dataset)
      test_accuracy, ema_accuracy = test['accuracy'], ema_test['accuracy']

      # Every cycle queries, the last one too: its query is the next batch to label.
      candidates = unlabeled
      if config.pool_subset and config.pool_subset < len(unlabeled):
        candidates = np.sort(query_rng.choice(unlabeled, config.pool_subset, replace=False))
      if budget > len(candidates):
        raise ValueError(f'Budget {budget} exceeds the {len(candidates)} candidates; raise '
                         '--config.pool_subset or lower --config.budget_fraction.')
      # COD's baseline: w_{c-1} (Eq. 5), or a snapshot config.cod_interval before the end.
      query_baseline = (baseline if config.cod_interval == 'cycle'
                        else extra.variables[config.cod_interval])
      ctx = strategies.QueryContext(config, dataset, labeled, candidates, state, query_baseline,
                                    scorer, query_rng, cycle, strategy_state)
      start = time.perf_counter()
      queried = np.asarray(strategy(ctx, budget))
      score_seconds = time.perf_counter() - start
      _check_query(queried, candidates, budget, config.strategy)
      query_scores = ctx.report.get('scores')  # Aligned with the sorted candidates.
      if query_scores is not None:
        query_scores = [float(x) for x in
                        np.asarray(query_scores)[np.searchsorted(candidates, queried)]]

      record = {'cycle': cycle, 'num_labeled': int(len(labeled)),
                'labeled_fraction': len(labeled) / dataset.pool_size,
                'test_accuracy': test_accuracy, 'ema_test_accuracy': ema_accuracy,
                'train_loss': train_metrics.get('loss'), 'strategy': config.strategy,
                'seed': config.seed, 'dataset': config.dataset,
                'train_seconds': train_seconds, 'score_seconds': score_seconds,
                'num_queried': int(len(queried))}
      if dataset.is_segmentation:
        record.update(test_miou=test['miou'], ema_test_miou=ema_test['miou'],
                      per_class_iou=test['per_class_iou'])
      records.append(record)
      next_labeled = np.union1d(labeled, queried).astype(np.int64)
      key = jax.random.fold_in(base_key, cycle + 1)
      meta = {'cycle': cycle, 'labeled': checkpointing.indices_to_json(next_labeled),
              'queried': checkpointing.indices_to_json(queried), 'query_scores': query_scores,
              # A cod query in cycle 1 may take the lowest scores (strategies/cod.py).
              'query_order': ('lowest' if config.strategy == 'cod'
                              and cod_strategy.takes_lowest(config, cycle) else 'highest'),
              'records': records}
      if extra_specs:
        meta['extra_baselines_steps_back'] = extra.steps_back
      checkpointer.save(cycle, _model_tree(state, key, extra.variables), meta,
                        strategy_state)  # Every process.
      if is_writer():
        label_source.record_query(cycle, meta)
      _write_metrics(workdir, records)
      if writer is not None:
        if test_accuracy is not None:
          writer.add_scalar('cycle/test_accuracy', test_accuracy, len(labeled))
        if dataset.is_segmentation:
          writer.add_scalar('cycle/test_miou', test['miou'], len(labeled))
        writer.flush()
      logging.info('cycle %d: %d labeled, test accuracy %s (EMA %s)%s, train %.1fs, '
                   'query %.2fs', cycle, len(labeled), _accuracy_text(test_accuracy),
                   _accuracy_text(ema_accuracy),
                   f", mIoU {test['miou']:.4f}" if 'miou' in test else '', train_seconds,
                   score_seconds)

      labeled, step = next_labeled, int(state.step)
      variables, ema_variables = state.variables, state.ema_variables
      head_params = state.loss_head_params
      baseline = jax.tree.map(jnp.copy, variables)  # w_c, the next cycle's w_{c-1}.
  finally:
    checkpointer.close()
    if writer is not None:
      writer.close()
  return records


def _accuracy_text(accuracy: Optional[float]) -> str:
  return 'n/a (no test set)' if accuracy is None else f'{accuracy:.4f}'


def _write_metrics(workdir: str, records: list[dict]) -> None:
  """metrics.jsonl, one line per completed cycle, rewritten from the checkpointed records."""
  if not is_writer():
    return
  checkpointing.write_atomic(os.path.join(workdir, 'metrics.jsonl'),
                ''.join(json.dumps(r) + '\n' for r in records))


def final_labeled(workdir: str) -> Optional[np.ndarray]:
  """The labeled set stored by the latest checkpoint in `workdir`, or None."""
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    last = checkpointer.latest_cycle()
    if last is None:
      return None
    return np.asarray(checkpointer.restore_meta(last)['labeled'], np.int64)
  finally:
    checkpointer.close()
