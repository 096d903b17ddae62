"""End to end: `python -m tod_jax.select` on three tiny trained candidates."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from tod_jax import candidates, datasets, model_selection, models, scoring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def pool(tmp_path_factory):
  from conftest import make_tiny_config  # pylint: disable=import-outside-toplevel
  config = make_tiny_config()
  ds = datasets.load_digits()
  root = str(tmp_path_factory.mktemp('pool'))
  dirs = candidates.train_pool(config, ds, np.arange(96), root,
                               [{'seed': 0}, {'seed': 1, 'learning_rate': 0.01}, {'seed': 2}])
  return config, ds, dirs


def test_cli_prints_rankings_and_evaluation(pool):
  config, ds, dirs = pool
  result = subprocess.run(
      [sys.executable, '-m', 'tod_jax.select', f'--candidates={",".join(dirs)}',
       '--config=configs/digits.py', '--draws=20'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  scorer = scoring.Scorer(models.create_model(config.model, 10), ds.mean, ds.std, 'softmax', 512)
  accuracies = [scorer.accuracy(candidates.load_candidate(d).variables, ds.test_images,
                                ds.test_labels) for d in dirs]
  assert f'| max single model | {100 * max(accuracies):.2f} |' in out
  assert f'| min single model | {100 * min(accuracies):.2f} |' in out
  for name in model_selection.METHOD_NAMES.values():
    ranking = next(line for line in out.splitlines() if line.startswith(f'  {name}: '))
    assert sorted(p.split(' ')[0] for p in ranking.split(': ')[1].split(', ')) == [
        'candidate_00', 'candidate_01', 'candidate_02']
  assert '| method | Top-1(3) |' in out  # Only the Table III setting 3 candidates allow.


def test_cli_refuses_a_config_with_another_model(pool):
  config, ds, dirs = pool
  config.model = 'resnet18'
  with pytest.raises(ValueError, match='pass the config the candidates were trained with'):
    model_selection.load_outputs(dirs, config, ds, '1epoch')
