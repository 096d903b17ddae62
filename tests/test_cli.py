"""Every command line: a bug keeps its traceback; configs load from any working directory.

The user's mistakes, each ending a command with one line, are the table of test_errors.py."""

import os
import subprocess
import sys

import pytest

from conftest import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, 'configs', 'digits.py')


def _command(name, *args):
  return [sys.executable, '-m', f'tod_jax.{name}', *args]


def test_a_bug_keeps_its_traceback():
  code = ('from tod_jax import cli\n'
          'def main(argv):\n  raise KeyError("a bug")\n'
          'cli.run(main)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, env=cpu_env())
  assert result.returncode != 0 and 'Traceback' in result.stderr
  assert "KeyError: 'a bug'" in result.stderr


@pytest.mark.parametrize('config', ['cityscapes.py', 'synthetic_seg.py', 'digits.py'])
def test_configs_load_from_any_directory(tmp_path, config):
  """A config file imports the shipped defaults from the package, not from ./configs."""
  code = ('import importlib.util, sys\n'
          f'spec = importlib.util.spec_from_file_location("c", {os.path.join(ROOT, "configs", config)!r})\n'
          'module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n'
          'print(module.get_config().dataset)')
  result = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == config[:-3]


def test_a_users_own_config_file_starts_from_the_shipped_defaults(tmp_path):
  own = tmp_path / 'mine.py'
  own.write_text('from tod_jax.configs import default\n'
                 'def get_config():\n'
                 '  config = default.get_config()\n'
                 "  config.dataset, config.model = 'cityscapes', 'drn_tiny'\n"
                 '  config.crop_padding = 0\n'
                 '  return config\n')
  data_dir = str(tmp_path / 'tfds')
  result = subprocess.run(
      _command('main', f'--config={own}', f'--workdir={tmp_path / "run"}',
               f'--config.data_dir={data_dir}'),
      cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
      env=cpu_env())
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('tod_jax.main: error: Cityscapes')
  for part in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip',
               f'{data_dir}/downloads/manual/', f'--config.data_dir={data_dir}'):
    assert part in last, part
