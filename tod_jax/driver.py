"""The active-learning loop: setup, resume, one `cycle.run_cycle` per cycle, files.

config -> data -> state -> train -> score -> select -> checkpoint -> metrics.
"""

import dataclasses
import os
from typing import Any, Optional

import jax.numpy as jnp
import ml_collections
from absl import logging

from tod_jax import (batches, checkpointing, configs, cycle, datasets, devices, errors, files,
                     initializers, interrupts, label_noise, label_sources, loss_forms,
                     metric_writers, models, precision, pretrained, rundir, strategies, tod)
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError

DTYPES = ('float32', 'bfloat16')  # Allowed for kept_outputs.dtype.
TEACHERS = ('ema', 'cyclic')  # config.loss_teacher.


def setup_devices(config: ml_collections.ConfigDict) -> None:
  """The devices and XLA settings a run of `config` gets (tod_jax.devices); call it before any
  other JAX call. Counts config.model's parameters where an 'auto' setting needs them."""
  devices.setup_devices(config, lambda: models.parameter_count(config.model))


def validate_config(config: ml_collections.ConfigDict, own_dataset: bool = False) -> None:
  """Fails fast, before any data is loaded, on names and values that cannot work.

  `own_dataset`: the run gets its dataset from the caller (config.dataset is a label).
  """
  configs.check_fields(config)  # A misspelt field would be ignored.
  if not own_dataset:
    datasets.DATASETS.get(config.dataset)
  precision.check_compute_dtype(config.compute_dtype)
  if config.kept_outputs.dtype not in DTYPES:
    raise ConfigError(f'kept_outputs.dtype {config.kept_outputs.dtype!r} is not supported; set '
                      f'--config.kept_outputs.dtype to one of {DTYPES}.')
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
  for field, choices in (('compilation_cache_dir', "a path, 'auto' or '' (no cache)"),
                         ('profile_dir', "a path or '' (no trace)")):
    if not isinstance(config[field], str):
      raise ConfigError(f'{field} {config[field]!r} is not a directory; set --config.{field} '
                        f'to {choices}.')
  if config.steps_per_dispatch < 1:
    raise ConfigError(f'steps_per_dispatch must be at least 1 (1: one train step per '
                      f'dispatch); got {config.steps_per_dispatch}.')
  precision.check(config)
  label_noise.check_probability(config.label_noise)
  cycle.snapshot_intervals(config)
  batches.check_data_on_device(config.data_on_device)
  devices.check_cpu_convolutions(config.cpu_convolutions)
  if config.distributed.host_pool and config.strategy == 'vaal':
    raise ConfigError("strategy 'vaal' trains on every pool image in each process; set "
                      '--config.distributed.host_pool=False for it.')


def load_run_dataset(config: ml_collections.ConfigDict,
                     dataset: Optional[Dataset] = None
                     ) -> tuple[Dataset, Optional[dict]]:
  """(the dataset a run trains on: config.dataset, or `dataset`, with label noise applied,
  the record of the flipped labels or None); writes nothing."""
  dataset = datasets.load_dataset(config) if dataset is None else dataset
  return label_noise.apply(config, dataset)


def _restore_or_start(experiment: cycle.Experiment, checkpointer: checkpointing.Checkpointer,
                      source: Any) -> tuple[cycle.CycleState, Optional[dict]]:
  """(the state after the last completed cycle, its checkpoint's JSON part), or (the state
  before cycle 1, None); reads only."""
  last = checkpointer.latest_cycle()
  if last is None:
    labeled = source.initial_labeled(experiment.initial_size, experiment.config.seed)
    return cycle.initial_state(experiment, labeled), None
  state, info, _ = rundir.restore(checkpointer, last, experiment)
  return state, info


def _report(writer: metric_writers.MetricWriter, record: cycle.CycleRecord) -> None:
  """The cycle's test metrics to `writer` (at the labeled count) and one log line."""
  line = record.metrics
  accuracy, ema = line['test_accuracy'], line['ema_test_accuracy']
  scalars = {f'cycle/{name}': line[name] for name in ('test_accuracy', 'test_miou')
             if line.get(name) is not None}
  writer.write_scalars(line['num_labeled'], scalars)
  text = lambda a: 'n/a (no test set)' if a is None else f'{a:.4f}'
  miou = f", mIoU {line['test_miou']:.4f}" if 'test_miou' in line else ''
  logging.info('cycle %d: %d labeled, test accuracy %s (EMA %s)%s, train %.1fs, query %.2fs',
               line['cycle'], line['num_labeled'], text(accuracy), text(ema), miou,
               line['train_seconds'], line['score_seconds'])


def run(config: ml_collections.ConfigDict, workdir: str,
        dataset: Optional[Dataset] = None, fresh_start: bool = False
        ) -> list[dict]:
  """Runs (or resumes) all cycles of `config` in `workdir`; returns the metrics records.

  `dataset`: the user's own data (Dataset.from_arrays) instead of
  config.dataset; pass the same one to resume. `fresh_start`: start over in a workdir
  that holds results (metrics.jsonl) but no checkpoints, replacing them.

  Everything is checked (config, workdir, data, label source, budget, model, the
  checkpoint to resume) before the first file is written; a finished run writes nothing.
  """
  validate_config(config, own_dataset=dataset is not None)
  rundir.check_workdir(workdir, config, fresh_start)
  config = rundir.resumed_config(workdir, config)  # A changed default keeps the saved value.
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    last = checkpointer.latest_cycle()
    if last is not None and last >= config.num_cycles:
      return _finished(config, workdir, checkpointer.restore_meta(last), dataset)
    if rundir.is_writer():
      with errors.writing(workdir):
        files.check_writable(workdir)  # Before the data loads, which can take minutes.
    dataset, noise = load_run_dataset(config, dataset)
    source = label_sources.make_source(config, dataset, workdir)
    experiment = cycle.setup(config, dataset, initial_size=source.num_initial)
    state, info = _restore_or_start(experiment, checkpointer, source)
    with errors.writing(workdir):  # Every check has passed: files are written from here on.
      rundir.write_config(workdir, config)
      label_noise.write_record(workdir, noise)
      source.start()
      if info is not None and rundir.is_writer():
        source.record_query(state.cycle, info)  # Completes a write that a crash cut short.
      rundir.write_metrics(workdir, state.records)
    if info is not None:
      logging.info('Resuming %s after cycle %d (%d labeled).', workdir, state.cycle,
                   len(state.labeled))
    return _run_cycles(experiment, checkpointer, source, dataset, state, workdir)
  finally:
    checkpointer.close()


def _finished(config: ml_collections.ConfigDict, workdir: str, info: dict,
              dataset: Optional[Dataset]) -> list[dict]:
  """A finished run's records (from its last checkpoint); only a file that a crash cut short
  is written, so a finished run on a read-only mount reports too."""
  with errors.writing(workdir):
    if label_sources.keeps_files(config) and rundir.is_writer():
      source = label_sources.make_source(config, load_run_dataset(config, dataset)[0], workdir)
      source.record_query(info['cycle'], info)
    rundir.write_metrics(workdir, info['records'])
  logging.info('Run %s is finished (%d of %d cycles): results in %s; pass a larger '
               '--config.num_cycles to go on.', workdir, info['cycle'], config.num_cycles,
               os.path.join(workdir, rundir.METRICS))
  return list(info['records'])


def _run_cycles(experiment: cycle.Experiment, checkpointer: checkpointing.Checkpointer,
                source: Any, dataset: Dataset, state: cycle.CycleState,
                workdir: str) -> list[dict]:
  """The loop: each remaining cycle, its checkpoint and metrics line; returns every record."""
  config = experiment.config
  logging.info('Mesh: %d %s device(s), data parallel.', experiment.mesh.size,
               experiment.mesh.devices.flat[0].platform)
  writer = rundir.metric_writer(workdir, config)
  saved_cycle = state.cycle
  try:
    with interrupts.watch() as ctrl_c:
      for number in source.cycles(state.cycle + 1, config.num_cycles):
        labeled, train_labels = source.labeled_set(state.labeled)
        state, record = cycle.run_cycle(
            experiment, state.replace(labeled=labeled),
            dataclasses.replace(dataset, train_labels=train_labels), writer=writer)
        info = rundir.save(checkpointer, state, record)  # Every process.
        saved_cycle = state.cycle
        if rundir.is_writer():
          source.record_query(number, info)
        rundir.write_metrics(workdir, state.records)
        _report(writer, record)
        if ctrl_c.pressed and state.cycle < config.num_cycles:
          # Its KeyboardInterrupt was lost inside a library: stop at this cycle's end.
          raise errors.Interrupted(rundir.kept_cycle_message(workdir, saved_cycle,
                                                             finished=True))
  except errors.Interrupted:
    raise
  except KeyboardInterrupt as e:
    raise errors.Interrupted(rundir.kept_cycle_message(workdir, saved_cycle)) from e
  finally:
    writer.close()
  return list(state.records)

