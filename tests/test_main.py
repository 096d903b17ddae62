"""The command line: a missing dataset ends with one message, no traceback."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cityscapes_without_data_prints_the_instructions(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  result = subprocess.run(
      [sys.executable, '-m', 'tod_jax.main', '--config=configs/cityscapes.py',
       f'--workdir={tmp_path / "run"}', f'--config.data_dir={data_dir}'],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('error: Cityscapes')
  for part in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip',
               f'{data_dir}/downloads/manual/', f'--config.data_dir={data_dir}'):
    assert part in last_line, part
