"""Candidate training: baseline checkpoints at the right step, save/load, errors."""

import chex
import jax
import numpy as np
import pytest

from tod_jax import candidates, datasets, loss_forms, models
from tod_jax.errors import UserError
from tod_jax.train_state import init_variables


def test_parse_interval():
  assert candidates.parse_interval('5steps', 9) == 5
  assert candidates.parse_interval('1step', 9) == 1
  assert candidates.parse_interval('1epoch', 9) == 9
  assert candidates.parse_interval('3epochs', 9) == 27
  for bad in ('0steps', 'epoch', '3 epochs', '2iters'):
    with pytest.raises(ValueError, match='Bad snapshot interval'):
      candidates.parse_interval(bad, 9)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  from conftest import make_tiny_config  # pylint: disable=import-outside-toplevel
  config = make_tiny_config()  # 2 epochs, batch 32: 64 labeled -> 2 steps/epoch, 4 steps.
  ds = datasets.load_digits()
  directory = str(tmp_path_factory.mktemp('cand'))
  meta = candidates.train_candidate(config, ds, np.arange(64), directory,
                                    ('1step', '1epoch', '2epochs'))
  return config, ds, directory, meta


def test_baselines_are_taken_the_interval_before_the_end(saved):
  config, ds, directory, meta = saved
  assert meta['steps'] == 4 and meta['steps_per_epoch'] == 2
  assert meta['baselines'] == {'1step': 3, '1epoch': 2, '2epochs': 0}
  cand = candidates.load_candidate(directory)
  # A whole-run interval makes the initial weights the baseline.
  init = init_variables(models.create_model(config.model, 10),
                        jax.random.fold_in(jax.random.PRNGKey(config.seed), 0), ds.image_shape,
                        loss_forms.uses_consistency_head(config), config.param_init)
  chex.assert_trees_all_close(cand.baseline('2epochs'), init)
  leaves = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t['params'])])
  final, one_step, one_epoch = (leaves(v) for v in (
      cand.variables, cand.baseline('1step'), cand.baseline('1epoch')))
  assert 0 < np.linalg.norm(final - one_step) < np.linalg.norm(final - leaves(init))
  assert not np.array_equal(one_step, one_epoch)
  assert cand.meta['labeled'] == list(range(64))
  assert np.isfinite(cand.meta['train_loss'])
  with pytest.raises(UserError, match="has no baseline '5steps'"):
    cand.baseline('5steps')


def test_train_pool_keeps_saved_candidates(saved, tmp_path):
  config, ds, directory, _ = saved
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(directory, tmp_path / 'candidate_00')
  # Candidate 0 exists, so nothing is trained (an unknown model would fail otherwise).
  dirs = candidates.train_pool(config, ds, np.arange(64), str(tmp_path),
                               [{'model': 'no_such_model'}])
  assert dirs == [str(tmp_path / 'candidate_00')]


def test_errors(tiny_config, tmp_path):
  ds = datasets.load_digits()
  with pytest.raises(ValueError, match='exceed the 4 training steps'):
    candidates.train_candidate(tiny_config, ds, np.arange(64), str(tmp_path), ('3epochs',))
  with pytest.raises(ValueError, match='semi needs unlabeled samples'):
    candidates.train_candidate(tiny_config, ds, np.arange(ds.pool_size), str(tmp_path))
  with pytest.raises(FileNotFoundError, match='No candidate checkpoint'):
    candidates.load_candidate(str(tmp_path / 'missing'))
