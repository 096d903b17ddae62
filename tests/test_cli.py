"""Every command line: a user's mistake ends with one line (problem and fix), exit code 1 and
no traceback; a bug keeps its traceback. Configs load from any working directory."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, 'configs', 'digits.py')


def _command(name, *args):
  return [sys.executable, '-m', f'tod_jax.{name}', *args]


def _cases(tmp):
  """(id, argv, expected text in the error line) for each user error, each command."""
  other_run = os.path.join(tmp, 'other_run')
  os.makedirs(other_run)
  from configs import digits  # pylint: disable=import-outside-toplevel
  other = digits.get_config()
  other.learning_rate = 0.5
  with open(os.path.join(other_run, 'config.json'), 'w') as f:
    f.write(other.to_json())
  run = lambda *a: _command('main', f'--config={DIGITS}', f'--workdir={tmp}/run', *a)
  empty = os.path.join(tmp, 'empty')
  return [
      ('strategy', run('--config.strategy=oracle'), "Unknown strategy 'oracle'; set "
       '--config.strategy to one of'),
      ('dataset', run('--config.dataset=mnist'), "Unknown dataset 'mnist'"),
      ('model', run('--config.model=vit'), "Unknown model 'vit'"),
      ('budget', run('--config.budget_fraction=0.5'), 'but the pool has 1437; lower '
       '--config.budget_fraction'),
      ('value', run('--config.num_epochs=0'), 'must be at least 1'),
      ('workdir', _command('main', f'--config={DIGITS}', f'--workdir={other_run}'),
       'holds a run with another config (learning_rate: 0.5 there, 0.05 now'),
      ('missing_data', _command('main', f'--config={ROOT}/configs/cifar10.py',
                                f'--workdir={tmp}/c10', f'--config.data_dir={empty}'),
       "TFDS dataset 'cifar10' (split 'train') is not prepared"),
      ('compare', _command('compare', f'--config={DIGITS}', f'--workdir={tmp}/cmp',
                           '--strategies=cod,oracle', '--seeds=0'), "Unknown strategy 'oracle'"),
      ('analyze', _command('analyze', f'--workdir={empty}'), 'holds no tod_jax run'),
      ('select', _command('select', f'--candidates={empty}', f'--config={DIGITS}'),
       'No candidate checkpoint'),
      ('query', _command('query', f'--workdir={empty}'), 'holds no run yet'),
      ('label', _command('label', f'--workdir={tmp}', f'--labels={tmp}/missing.csv'),
       'does not exist'),
  ]


def test_user_errors_end_every_command_with_one_line(tmp_path):
  cases = _cases(str(tmp_path))
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  cwd = str(tmp_path)  # Not the repo: config files must find what they import.
  procs = [(case, subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True))
           for case, argv, _ in cases]
  for (case, proc), (_, _, expected) in zip(procs, cases):
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, (case, stderr[-3000:])
    assert 'Traceback' not in stderr, (case, stderr[-3000:])
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f'tod_jax.{argv_command(cases, case)}: error: '), (case, last)
    assert expected in last, (case, last)
    assert not any('libtpu' in line for line in stderr.splitlines()), (case, stderr[:500])
  assert not os.path.exists(os.path.join(cwd, 'cmp', 'cod_seed0')), 'compare ran cod first'


def argv_command(cases, case):
  argv = next(a for c, a, _ in cases if c == case)
  return argv[2].split('.', 1)[1]


def test_a_bug_keeps_its_traceback():
  code = ('from tod_jax import cli\n'
          'def main(argv):\n  raise KeyError("a bug")\n'
          'cli.run(main)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
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
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('tod_jax.main: error: Cityscapes')
  for part in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip',
               f'{data_dir}/downloads/manual/', f'--config.data_dir={data_dir}'):
    assert part in last, part
