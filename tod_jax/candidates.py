"""Candidate models for test-data-aware model selection (paper Section V).

A candidate is one model trained on a fixed labeled set and saved with Orbax:
its final variables w and, per baseline interval, the variables w~ that many
steps or epochs before the end (the baseline of Eq. 10). A pool of candidates
differs by seed and hyper-parameters (config overrides).
"""

import dataclasses
import json
import os
from typing import Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from tod_jax import batches, checkpointing, cycle, files, loss_forms, models, train
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError, MissingFileError, UserError
from tod_jax.snapshots import Snapshots, parse_interval  # noqa: F401 (public here too)
from tod_jax.train_state import (create_optimizer, create_train_state, init_variables,
                                 lr_decay_step)

DEFAULT_BASELINE = '1epoch'
_CHECKPOINT = 0  # A candidate directory holds one checkpoint, saved under this number.


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A trained candidate: final and baseline variables ({'params', 'batch_stats'}) and metadata."""
  directory: str
  variables: dict
  baselines: dict  # Interval spec (e.g. '1epoch') -> variables.
  meta: dict  # 'config', 'train_loss', 'steps', 'steps_per_epoch', 'baselines', 'labeled'.

  def baseline(self, spec: str) -> dict:
    if spec not in self.baselines:
      raise UserError(f'Candidate {self.directory} has no baseline {spec!r}; it has '
                     f'{sorted(self.baselines)}. Pick one of those or retrain it with that '
                     'interval.')
    return self.baselines[spec]


def train_candidate(config: ml_collections.ConfigDict, dataset: Dataset, labeled: np.ndarray,
                    directory: str, baseline_intervals: Iterable[str] = (DEFAULT_BASELINE,)
                    ) -> dict:
  """Trains one candidate on `labeled` (TOD loss on the rest of the pool if config.semi).

  Saves the final variables and one baseline per interval in `directory`; returns
  the metadata saved with them.
  """
  labeled = np.sort(np.asarray(labeled))
  unlabeled = np.setdiff1d(np.arange(dataset.pool_size), labeled)
  if config.semi and not len(unlabeled):
    raise ConfigError('config.semi needs unlabeled samples but the labeled set is the whole '
                     'pool; set --config.semi=False or label a fraction of the pool.')
  per_epoch = batches.steps_per_epoch(len(labeled), config.batch_size)
  total = config.num_epochs * per_epoch
  model = models.create_model(config.model, dataset.num_classes, config.dropout_rate,
                              cycle.train_dtype(config))
  key = jax.random.PRNGKey(config.seed)
  variables = init_variables(model, jax.random.fold_in(key, 0), dataset.image_shape,
                             loss_forms.uses_consistency_head(config), config.param_init)
  snapshots = Snapshots(baseline_intervals, per_epoch, total, variables)

  state = create_train_state(model, variables, create_optimizer(config),
                             decay_step=lr_decay_step(config, total))
  inputs = train.CycleInputs(dataset, labeled, unlabeled, np.random.default_rng(config.seed),
                             jax.random.fold_in(key, 1), cycle=1)
  state, metrics = train.train_cycle(state, inputs, config, on_step=snapshots.on_step,
                                     stop_at=snapshots.steps)
  meta = {'config': json.loads(config.to_json()), 'train_loss': metrics['sup_loss'],
          'steps': total, 'steps_per_epoch': per_epoch,
          'baselines': {spec: total - n for spec, n in snapshots.steps_back.items()},
          'labeled': files.indices_to_json(labeled)}
  checkpointer = checkpointing.Checkpointer(directory)
  try:
    checkpointer.save(_CHECKPOINT, {'final': state.variables, 'baselines': snapshots.variables},
                      meta)
  finally:
    checkpointer.close()
  return meta


def train_pool(config: ml_collections.ConfigDict, dataset: Dataset, labeled: np.ndarray,
               root: str, variants: Sequence[Mapping], baseline_intervals: Iterable[str] = (
                   DEFAULT_BASELINE,)) -> list[str]:
  """Trains one candidate per variant (config overrides, e.g. {'seed': 1, 'learning_rate': .1}).

  Candidate i goes to `root/candidate_<i>`; one that is already saved is kept, so an
  interrupted pool resumes. Returns the candidate directories.
  """
  baseline_intervals = tuple(baseline_intervals)
  directories = []
  for i, overrides in enumerate(variants):
    directory = os.path.join(root, f'candidate_{i:02d}')
    directories.append(directory)
    if is_saved(directory):
      continue
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.update(dict(overrides))
    train_candidate(variant, dataset, labeled, directory, baseline_intervals)
  return directories


def is_saved(directory: str) -> bool:
  """Whether `directory` holds a complete candidate checkpoint."""
  if not os.path.isdir(os.path.join(directory, 'checkpoints')):
    return False
  checkpointer = checkpointing.Checkpointer(directory)
  try:
    return checkpointer.latest_cycle() == _CHECKPOINT
  finally:
    checkpointer.close()


def load_candidate(directory: str) -> Candidate:
  """Restores a candidate saved by `train_candidate`."""
  if not is_saved(directory):
    raise MissingFileError(f'No candidate checkpoint in {directory}; train one with '
                            'tod_jax.candidates.train_candidate (or check the path).')
  checkpointer = checkpointing.Checkpointer(directory)
  try:
    tree, meta, _ = checkpointer.restore(_CHECKPOINT, None)  # No strategy state.
  finally:
    checkpointer.close()
  return Candidate(directory, tree['final'], tree['baselines'], meta)
