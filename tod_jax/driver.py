"""The active-learning loop: setup, resume, one `cycle.run_cycle` per cycle, files.

config -> data -> state -> train -> score -> select -> checkpoint -> metrics.
"""

import dataclasses
import os
from typing import Any, Optional

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from tod_jax import (checkpointing, cycle, devices, initializers, input_pipeline, label_noise,
                     label_sources, loss_forms, models, precision, pretrained, rundir,
                     strategies, tod)
from tod_jax.errors import ConfigError

DTYPES = ('float32', 'bfloat16')  # Allowed for compute_dtype and kept_outputs_dtype.
TEACHERS = ('ema', 'cyclic')  # config.loss_teacher.


def validate_config(config: ml_collections.ConfigDict, own_dataset: bool = False) -> None:
  """Fails fast, before any data is loaded, on names and values that cannot work.

  `own_dataset`: the run gets its dataset from the caller (config.dataset is a label).
  """
  if not own_dataset:
    input_pipeline.DATASETS.get(config.dataset)
  for field in ('compute_dtype', 'kept_outputs_dtype'):
    if config[field] not in DTYPES:
      raise ConfigError(f'{field} {config[field]!r} is not supported; set --config.{field} '
                        f'to one of {DTYPES}.')
  models.MODELS.get(config.model)
  initializers.check(config.param_init)
  if config.init_checkpoint:  # Before the dataset loads, which can take minutes.
    pretrained.check_path(config.init_checkpoint)
  strategies.check_config(config)
  label_sources.check_mode(config.labels)
  loss_forms.get(config.tod_loss_form)
  if config.loss_teacher not in TEACHERS:
    raise ConfigError(f'Unknown loss_teacher {config.loss_teacher!r}; set '
                      "--config.loss_teacher to 'ema' (Eq. 7) or 'cyclic' (w_{c-1}).")
  for field in ('loss_output', 'score_output'):
    tod.model_output(jnp.zeros((1, 2)), config[field])
  if not 0 < config.initial_fraction <= 1 or not 0 <= config.budget_fraction <= 1:
    raise ConfigError('initial_fraction must be in (0, 1] and budget_fraction in [0, 1]; got '
                      f'{config.initial_fraction} and {config.budget_fraction}.')
  if config.num_cycles < 1 or config.num_epochs < 1 or config.batch_size < 1:
    raise ConfigError('num_cycles, num_epochs and batch_size must be at least 1; got '
                      f'{config.num_cycles}, {config.num_epochs}, {config.batch_size}.')
  precision.check(config)
  label_noise.check_probability(config.label_noise)
  cycle.snapshot_intervals(config)
  input_pipeline.check_data_on_device(config.data_on_device)
  devices.check_cpu_convolutions(config.cpu_convolutions)
  if config.host_pool and config.strategy == 'vaal':
    raise ConfigError("strategy 'vaal' trains on every pool image in each process; set "
                      '--config.host_pool=False for it.')


def load_run_dataset(config: ml_collections.ConfigDict, workdir: str,
                     dataset: Optional[input_pipeline.Dataset] = None
                     ) -> input_pipeline.Dataset:
  """The dataset a run trains on (config.dataset, or `dataset`) with label noise applied."""
  dataset = input_pipeline.load_dataset(config) if dataset is None else dataset
  return label_noise.apply(config, dataset, workdir)


def _start_or_resume(experiment: cycle.Experiment, checkpointer: checkpointing.Checkpointer,
                     source: Any, workdir: str) -> cycle.CycleState:
  """The state after the last completed cycle, or before cycle 1."""
  last = checkpointer.latest_cycle()
  if last is None:
    labeled = source.initial_labeled(experiment.initial_size, experiment.config.seed)
    return cycle.initial_state(experiment, labeled)
  state, info, _ = rundir.restore(checkpointer, last, experiment)
  if rundir.is_writer():
    source.record_query(last, info)  # Completes a write that a crash cut short.
  logging.info('Resuming %s after cycle %d (%d labeled).', workdir, last, len(state.labeled))
  return state


def _report(writer: Any, record: cycle.CycleRecord) -> None:
  """TensorBoard scalars and one log line for a completed cycle."""
  line = record.metrics
  accuracy, ema = line['test_accuracy'], line['ema_test_accuracy']
  if writer is not None:
    if accuracy is not None:
      writer.add_scalar('cycle/test_accuracy', accuracy, line['num_labeled'])
    if 'test_miou' in line:
      writer.add_scalar('cycle/test_miou', line['test_miou'], line['num_labeled'])
    writer.flush()
  text = lambda a: 'n/a (no test set)' if a is None else f'{a:.4f}'
  miou = f", mIoU {line['test_miou']:.4f}" if 'test_miou' in line else ''
  logging.info('cycle %d: %d labeled, test accuracy %s (EMA %s)%s, train %.1fs, query %.2fs',
               line['cycle'], line['num_labeled'], text(accuracy), text(ema), miou,
               line['train_seconds'], line['score_seconds'])


def run(config: ml_collections.ConfigDict, workdir: str,
        dataset: Optional[input_pipeline.Dataset] = None) -> list[dict]:
  """Runs (or resumes) all cycles of `config` in `workdir`; returns the metrics records.

  `dataset`: the user's own data (input_pipeline.Dataset.from_arrays) instead of
  config.dataset; pass the same one to resume.
  """
  validate_config(config, own_dataset=dataset is not None)
  os.makedirs(workdir, exist_ok=True)
  rundir.check_config(workdir, config)
  dataset = load_run_dataset(config, workdir, dataset)
  source = label_sources.make_source(config, dataset, workdir)
  experiment = cycle.setup(config, dataset, initial_size=source.num_initial)
  logging.info('Mesh: %d %s device(s), data parallel.', experiment.mesh.size,
               experiment.mesh.devices.flat[0].platform)
  checkpointer = checkpointing.Checkpointer(workdir)
  writer = None
  try:
    state = _start_or_resume(experiment, checkpointer, source, workdir)
    rundir.write_metrics(workdir, state.records)
    writer = rundir.tensorboard_writer(workdir, config)
    for number in source.cycles(state.cycle + 1, config.num_cycles):
      labeled, train_labels = source.labeled_set(state.labeled)
      state, record = cycle.run_cycle(
          experiment, state.replace(labeled=labeled),
          dataclasses.replace(dataset, train_labels=train_labels), writer=writer)
      info = rundir.save(checkpointer, state, record)  # Every process.
      if rundir.is_writer():
        source.record_query(number, info)
      rundir.write_metrics(workdir, state.records)
      _report(writer, record)
  finally:
    checkpointer.close()
    if writer is not None:
      writer.close()
  return list(state.records)


def final_labeled(workdir: str) -> Optional[np.ndarray]:
  """The labeled set stored by the latest checkpoint in `workdir`, or None."""
  return rundir.final_labeled(workdir)
