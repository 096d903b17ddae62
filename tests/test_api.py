"""The docs' Python API example (docs/own-data.md) (own arrays, own Flax module) runs, checkpoints and resumes."""

import json
import os
import re

import numpy as np
import pytest

from tod_jax.dataset import Dataset
from tod_jax.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_example() -> str:
  with open(os.path.join(ROOT, 'docs', 'own-data.md')) as f:
    readme = f.read()
  match = re.search(r'<!-- python-api-example -->\s*```python\n(.*?)```', readme, re.S)
  assert match, 'docs/own-data.md has no python-api-example block'
  return match.group(1)


def test_readme_example_runs_two_cycles_and_resumes(tmp_path, capsys):
  code = _readme_example()
  assert "tod_jax.run(config, 'runs/my_digits', dataset=dataset)" in code
  code = code.replace("'runs/my_digits'", repr(str(tmp_path / 'run')))
  code = code.replace('config.num_epochs = 40', 'config.num_epochs, config.num_cycles = 2, 2')
  code = code.replace("tod_jax.register_model('tiny_net', TinyNet)",
                      "tod_jax.register_model('tiny_net', TinyNet)"
                      " if 'tiny_net' not in tod_jax.models.MODELS else None")
  namespace = {}
  exec(compile(code, 'README example', 'exec'), namespace)  # pylint: disable=exec-used
  records = namespace['records']
  assert [r['cycle'] for r in records] == [1, 2] and records[0]['dataset'] == 'my_digits'
  assert [r['num_labeled'] for r in records] == [140, 210]  # 10% of 1,400, +70.
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    assert [json.loads(line) for line in f] == records
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['1', '2']
  exec(compile(code, 'README example', 'exec'), {})  # Rerun: resumes, nothing to do.
  out = capsys.readouterr().out.strip().splitlines()
  assert out[0] == out[1]


@pytest.mark.parametrize('images,labels,message', [
    (np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, int), 'must be uint8'),
    (np.zeros((4, 8, 8, 1), np.uint8), np.zeros(3, int), 'must be 4 integer class labels'),
    (np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 2, -3]), 'below -1'),
])
def test_from_arrays_refuses_bad_arrays_with_the_fix(images, labels, message):
  with pytest.raises(DataError, match=message):
    Dataset.from_arrays(images, labels, images[:0], labels[:0])


def test_from_arrays_measures_mean_and_std_and_counts_classes():
  images = np.stack([np.full((2, 2), 0, np.uint8), np.full((2, 2), 255, np.uint8)])
  ds = Dataset.from_arrays(images, np.array([0, 2]), images, np.array([1, 0]))
  assert ds.image_shape == (2, 2, 1) and ds.num_classes == 3 and ds.pool_size == 2
  assert ds.mean == pytest.approx((0.5,)) and ds.std == pytest.approx((0.5,))
  assert ds.train_labels.dtype == np.int32
