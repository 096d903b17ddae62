"""The run directory: its files and the checkpoint form of the cycle state.

  WORKDIR/config.json          the run's config (checked on resume)
  WORKDIR/metrics.jsonl        one line per completed cycle
  WORKDIR/checkpoints/<c>/     Orbax: the CycleState after cycle c (+ its snapshots)
  WORKDIR/tensorboard/         TensorBoard events

Every command that reads a run (driver, analyze, query, compare, benchmarks) goes
through this module. Only process 0 writes files (multi-host runs).
"""

import copy
import json
import os
from typing import Optional

import jax
import ml_collections
import numpy as np

from tod_jax import (checkpointing, configs, devices, files, metric_writers, precision,
                     sharded_map)
from tod_jax.cycle import CycleRecord, CycleState, Experiment
from tod_jax.errors import ConfigError, MissingFileError

CONFIG, METRICS = 'config.json', 'metrics.jsonl'
# Config fields ('group.field' in a group; a group's name: all its fields) that may change when
# a run is resumed.
RESUMABLE_CHANGES = frozenset(
    {'num_cycles', 'progress_bar', 'tensorboard', 'score_chunk_size', 'data_dir',
     'data_on_device', 'device_data_max_bytes', 'distributed', 'num_cpu_devices',
     'cpu_convolutions', 'deterministic', 'precision', 'steps_per_dispatch',
     'compilation_cache_dir', 'profile_dir'})
# Config fields added after runs were saved: a config.json without one had this value.
ADDED_FIELDS = {
    'label_noise': 0.0, 'label_noise_seed': 0, 'snapshot_intervals': '',
    'compute_dtype': 'float32', 'tod_loss_form': 'paper', 'cod_interval': 'cycle',
    'vaal.latent_size': 32, 'vaal.width': 128, 'vaal.discriminator_width': 512, 'vaal.beta': 1.0,
    'vaal.adversary_weight': 1.0, 'vaal.learning_rate': 5e-4, 'vaal.batch_size': 64,
    'vaal.vae_steps': 2, 'vaal.discriminator_steps': 1, 'vaal.iteration_fraction': 0.25,
    'init_checkpoint': '', 'distributed.host_pool': False, 'cpu_convolutions': 'xla_default',
    'param_init': 'flax', 'deterministic': False, 'steps_per_dispatch': 1,
    'compilation_cache_dir': '', 'profile_dir': '',
    # Runs before the precision policy ran every phase at JAX's default.
    **{f'precision.{phase}': 'default' for phase in precision.PHASES}}
# Config fields whose default changed: {field: (old default, new default)}. A run saved with
# the old default and resumed under the new one is the same run, and keeps its saved value.
CHANGED_DEFAULTS = {'compute_dtype': ('float32', 'auto')}


class ConfigMismatchError(ConfigError):
  """The workdir holds a run made with another config."""


is_writer = devices.is_writer  # Only process 0 writes files.


def check_workdir(workdir: str, config: ml_collections.ConfigDict,
                  fresh_start: bool = False) -> None:
  """Raises if `workdir` cannot hold a run of `config`; reads only.

  Refused: a path through a file; the run of another config; results (metrics.jsonl)
  without the checkpoints to resume them from, unless `fresh_start` (then they are
  replaced).
  """
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    where = 'is a file' if path == os.path.abspath(workdir) else f'goes through the file {path}'
    raise ConfigError(f"--workdir {workdir} {where}; pass a directory (a new one, or a run's).")
  check_config(workdir, config)
  done = read_metrics(workdir)
  if done and not fresh_start and not checkpointing.has_checkpoints(workdir):
    raise MissingFileError(
        f'{workdir} holds results of {len(done)} cycle(s) (metrics.jsonl) but no checkpoints '
        'to resume them from; to start over there, replacing its metrics.jsonl, pass '
        '--fresh_start (tod_jax.run: fresh_start=True), or use a new --workdir.')


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises if `workdir` holds a run of another config (fields a resume may not change)."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return
  saved = configs.flatten(_saved_fields(path))
  current = configs.flatten(json.loads(resumed_config(workdir, config).to_json()))
  diffs = sorted(k for k in set(saved) | set(current)
                 if k not in RESUMABLE_CHANGES and k.split('.')[0] not in RESUMABLE_CHANGES
                 and saved.get(k) != current.get(k))
  if diffs:
    detail = ', '.join(f'{k}: {saved.get(k)!r} there, {current.get(k)!r} now' for k in diffs)
    raise ConfigMismatchError(
        f'{workdir} holds a run with another config ({detail}); use a new --workdir, or '
        'the same config to resume it.')


def resumed_config(workdir: str, config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """`config` as a run in `workdir` resumes it: a field of CHANGED_DEFAULTS at its new default
  takes the old default where the saved run has it (`config` itself when nothing changes)."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return config
  saved = configs.flatten(_saved_fields(path))
  kept = {field: old for field, (old, new) in CHANGED_DEFAULTS.items()
          if saved.get(field) == old and configs.flatten(
              json.loads(config.to_json())).get(field) == new}
  if not kept:
    return config
  config = copy.deepcopy(config)
  for field, value in kept.items():
    group, _, name = field.rpartition('.')
    (config[group] if group else config)[name] = value
  return config


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` and writes its config.json (process 0; an unchanged one is kept)."""
  if is_writer():
    os.makedirs(workdir, exist_ok=True)
    files.write_atomic(os.path.join(workdir, CONFIG),
                               json.dumps(json.loads(config.to_json()), indent=2,
                                          sort_keys=True))


def _saved_fields(path: str) -> dict:
  """A saved config.json's fields under today's names and groups, with ADDED_FIELDS filled
  in (nested dicts, as config.to_json())."""
  with open(path) as f:
    saved = configs.flatten(json.load(f))
  return configs.unflatten({**ADDED_FIELDS, **{configs.new_name(k, v): v for k, v in saved.items()}})


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (workdir/config.json)."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise MissingFileError(f'{path} does not exist: {workdir} holds no tod_jax run; pass the '
                    '--workdir of a run started with python -m tod_jax.main.')
  return ml_collections.ConfigDict(_saved_fields(path))


def kept_cycle_message(workdir: str, cycle: int, finished: bool = False) -> str:
  """Where an interrupted run stands: the cycle cut short (or, `finished`: not started) and
  the last one kept."""
  if not cycle:
    return f'cycle 1 of {workdir} was cut short, no cycle is kept yet'
  stopped = 'was not started' if finished else 'was cut short'
  return (f'cycle {cycle + 1} {stopped}, cycle {cycle} is kept '
          f'({os.path.join(workdir, "checkpoints", str(cycle))}, '
          f'{os.path.join(workdir, METRICS)})')


def write_metrics(workdir: str, records) -> None:
  """metrics.jsonl, one line per completed cycle, rewritten from the checkpointed records."""
  if is_writer():
    files.write_atomic(os.path.join(workdir, METRICS),
                               ''.join(json.dumps(r) + '\n' for r in records))


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def _tree(state: CycleState, snapshots: Optional[dict]) -> dict:
  """The arrays of a checkpoint (file format: names kept from earlier versions)."""
  ema = state.ema_variables or state.variables
  tree = {'params': state.variables['params'], 'batch_stats': state.variables['batch_stats'],
          'ema_params': ema['params'], 'ema_batch_stats': ema['batch_stats'],
          'step': np.asarray(state.step, np.int32), 'rng': jax.random.key_data(state.key)}
  if state.loss_head is not None:
    tree['loss_head_params'] = state.loss_head
  if snapshots:
    tree['extra_baselines'] = snapshots
  return sharded_map.replicated_to_host(tree)


def meta(state: CycleState, record: CycleRecord) -> dict:
  """The JSON part of cycle state.cycle's checkpoint."""
  scores = record.query_scores
  out = {'cycle': state.cycle, 'labeled': files.indices_to_json(state.labeled),
         'queried': files.indices_to_json(record.queried),
         'query_scores': None if scores is None else [float(x) for x in scores],
         'query_order': record.query_order, 'records': list(state.records)}
  if record.snapshot_steps_back:
    out['extra_baselines_steps_back'] = record.snapshot_steps_back
  return out


def save(checkpointer: checkpointing.Checkpointer, state: CycleState,
         record: CycleRecord) -> dict:
  """Saves the state after cycle state.cycle (every process); returns its JSON part."""
  info = meta(state, record)
  checkpointer.save(state.cycle, _tree(state, record.snapshots), info, state.strategy_state)
  return info


def restore(checkpointer: checkpointing.Checkpointer, cycle: int,
            experiment: Experiment) -> tuple[CycleState, dict, dict]:
  """(the state after cycle `cycle`, its JSON part, its snapshots {spec: variables})."""
  abstract = CycleState(cycle, np.zeros(0, np.int64), experiment.init_variables, None,
                        experiment.init_loss_head, 0,
                        jax.random.PRNGKey(experiment.config.seed), {}, ())
  snapshots = {spec: experiment.init_variables for spec in experiment.snapshot_intervals}
  tree, info, strategy_state = checkpointer.restore(cycle, _tree(abstract, snapshots))
  state = CycleState(
      cycle, np.asarray(info['labeled'], np.int64),
      {'params': tree['params'], 'batch_stats': tree['batch_stats']},
      {'params': tree['ema_params'], 'batch_stats': tree['ema_batch_stats']},
      tree.get('loss_head_params'), int(tree['step']), np.asarray(tree['rng'], np.uint32),
      strategy_state, tuple(info['records']))
  return state, info, dict(tree.get('extra_baselines', {}))


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


def metric_writer(workdir: str, config: ml_collections.ConfigDict
                  ) -> metric_writers.MetricWriter:
  """TensorBoard events under workdir/tensorboard on process 0 (config.tensorboard), else none."""
  if not (config.tensorboard and is_writer()):
    return metric_writers.NullWriter()
  return metric_writers.TensorBoardWriter(os.path.join(workdir, 'tensorboard'))
