"""Every mistake a user can make (issue #26 and docs/errors.md's list), as a table.

Command-line rows run the real command (`python -m tod_jax.<command>`), three at a time,
each on its own files. A mistake must end with exit code 1, no traceback, and
exactly one stderr line that is not an absl log record (the INFO lines a command logs
before it fails are allowed): `tod_jax.<command>: error: ...` naming the cause and the
fix. Every path the command was given (workdir, data, labels) must be byte-identical
afterwards, or still absent. Python API rows call `tod_jax.run` and `Dataset.from_arrays`
in this process and expect one UserError.
"""

import concurrent.futures
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import tod_jax
from conftest import cpu_env, write_image_folder
from tod_jax import driver, errors, models
from tod_jax.errors import ConfigError, DataError, MissingFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'configs')
DIGITS = os.path.join(CONFIGS, 'digits.py')
# One cycle of one epoch: the run every row that needs a finished run copies.
TINY = {'num_cycles': 1, 'num_epochs': 1, 'progress_bar': False, 'tensorboard': False}
TINY_ARGS = [f'--config.{k}={v}' for k, v in TINY.items()]
LOG_RECORD = re.compile(r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ')
COMMANDS = ('main', 'compare', 'select', 'query', 'label', 'launch', 'analyze')


def tiny_config():
  from configs import digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config()
  config.update(TINY)
  return config


@dataclasses.dataclass
class Row:
  """One command-line mistake (code 1) or a call that must succeed without writing (code 0)."""
  argv: list  # After `python -m tod_jax.`: the command and its arguments.
  message: str  # Regex: the error line after `tod_jax.<command>: error: ` (code 0: any line).
  watched: tuple = ()  # Paths that must be byte-identical afterwards (or stay absent).
  code: int = 1
  read_only: tuple = ()  # Mounted read-only for the command.
  interrupt_when: str = ''  # Ctrl-C once this file has a line.


def _snapshot(path: str):
  """Bytes of every file and the name of every directory under `path` (a file: its bytes);
  None if absent."""
  if os.path.isfile(path):
    with open(path, 'rb') as f:
      return f.read()
  if not os.path.exists(path):
    return None
  out = {}
  for base, dirs, files in os.walk(path):
    for name in dirs:
      out[os.path.relpath(os.path.join(base, name), path) + '/'] = b''
    for name in files:
      with open(os.path.join(base, name), 'rb') as f:
        out[os.path.relpath(os.path.join(base, name), path)] = f.read()
  return out


def _can_mount_read_only() -> bool:
  """Whether a command can see a directory read-only here: as root, a private read-only bind
  mount (root writes through file modes); otherwise the file modes themselves."""
  if os.geteuid() != 0:
    return True
  probe = subprocess.run(['unshare', '-m', 'sh', '-c', 'mount --bind -o ro / /'],
                         capture_output=True, check=False)
  return probe.returncode == 0


def _command(row: Row) -> list[str]:
  argv = [sys.executable, '-m', f'tod_jax.{row.argv[0]}', *row.argv[1:]]
  if row.read_only and os.geteuid() == 0:
    mounts = ' && '.join(f'mount --bind -o ro {shlex.quote(p)} {shlex.quote(p)}'
                         for p in row.read_only)
    argv = ['unshare', '-m', 'sh', '-c', f'{mounts} && exec "$0" "$@"', *argv]
  return argv


def _set_modes(paths, writable: bool) -> None:
  """Without root, read-only is the file modes: a-w on every file and directory (or back)."""
  for path in paths:
    for base, _, files in os.walk(path):
      for p in [base] + [os.path.join(base, f) for f in files]:
        mode = os.stat(p).st_mode
        os.chmod(p, mode | 0o200 if writable else mode & ~0o222)


def _run(row: Row, cwd: str) -> subprocess.CompletedProcess:
  env = cpu_env()
  if row.read_only and os.geteuid() != 0:
    _set_modes(row.read_only, writable=False)
  try:
    proc = subprocess.Popen(_command(row), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if row.interrupt_when:
      while proc.poll() is None and not _snapshot(row.interrupt_when):
        time.sleep(0.05)
      proc.send_signal(signal.SIGINT)  # As Ctrl-C in a terminal.
    stdout, stderr = proc.communicate(timeout=600)
  finally:
    if row.read_only and os.geteuid() != 0:
      _set_modes(row.read_only, writable=True)
  return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope='module')
def finished(tmp_path_factory) -> str:
  """A finished 1-cycle digits run (TINY), made in this process."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  driver.run(tiny_config(), workdir)
  return workdir


def _rows(tmp: str, finished_run: str) -> dict[str, Row]:
  """The table: each row's files are made here, under `tmp`."""
  def copy(name, drop=()):
    path = os.path.join(tmp, name)
    shutil.copytree(finished_run, path, ignore=shutil.ignore_patterns(*drop))
    return path

  def new(name):
    return os.path.join(tmp, name)

  main = lambda workdir, *args: ['main', f'--config={DIGITS}', f'--workdir={workdir}',
                                 *TINY_ARGS, *args]
  images, broken_images = new('images'), new('broken_images')
  write_image_folder(images, seeds_per_class=2, unlabeled_per_class=3, test_per_class=1)
  shutil.copytree(images, broken_images)
  with open(os.path.join(broken_images, 'unlabeled', 'notes.png'), 'w') as f:
    f.write('not an image')
  tfds_dir = new('tfds')
  os.makedirs(tfds_dir)
  a_file = new('a_file')
  with open(a_file, 'w') as f:
    f.write('not a directory')
  read_only_new = new('read_only_new')
  os.makedirs(read_only_new)
  damaged = copy('damaged')
  for base, _, files in os.walk(os.path.join(damaged, 'checkpoints', '1', 'model')):
    for name in files:
      with open(os.path.join(base, name), 'wb') as f:
        f.write(b'garbage')
  ledger = new('ledger')
  os.makedirs(ledger)
  with open(os.path.join(ledger, 'labels.json'), 'w') as f:
    f.write('{"classes": ["cat", "dog"], "pool": ["a.png", "b.png", "c.png"], '
            '"queries": {"1": ["b.png"]}, "labels": {"a.png": {"label": "cat", "cycle": 0}}}')
  zebra = new('zebra.csv')
  with open(zebra, 'w') as f:
    f.write('sample_id,label\nb.png,zebra\n')
  empty = new('empty')
  os.makedirs(empty)
  interrupted = new('interrupted')
  image_folder = os.path.join(CONFIGS, 'image_folder.py')
  w = {name: new(f'w_{name}') for name in ('budget', 'cycles', 'typo', 'c10', 'folder',
                                            'unread', 'strategy', 'cmp')}
  rows = {
      # Issue #26: config.json was written before these checks.
      'budget': Row(main(w['budget'], '--config.initial_fraction=1.0'),
                    r'1 cycles need 1509 labeled samples .* but the pool has 1437; lower',
                    (w['budget'],)),
      'num_cycles': Row(main(w['cycles'], '--config.num_cycles=30'),
                        r'30 cycles need 2304 .* pool has 1437', (w['cycles'],)),
      'no_data_dir': Row(['main', f'--config={image_folder}', f'--workdir={w["folder"]}'],
                         r"Image folder '' has no labeled/ directory; set --config.data_dir",
                         (w['folder'],)),
      'no_tfds_data': Row(['main', f'--config={CONFIGS}/cifar10.py', f'--workdir={w["c10"]}',
                           f'--config.data_dir={tfds_dir}'],
                          r"TFDS dataset 'cifar10' \(split 'train'\) is not prepared in "
                          f'{re.escape(tfds_dir)}: .*tfds build cifar10',
                          (w['c10'], tfds_dir)),
      'non_image_file': Row(['query', f'--config={image_folder}', f'--workdir={w["unread"]}',
                             f'--config.data_dir={broken_images}', '--config.image_size=8'],
                            r'Cannot read image .*unlabeled/notes.png .*remove or replace',
                            (w['unread'], broken_images)),
      # Issue #26: tracebacks.
      'config_field_typo': Row(main(w['typo'], '--config.num_epoch=2'),
                               r"Unknown config field 'num_epoch' \(did you mean 'num_epochs'"
                               r"\?\); tod_jax reads only the fields of", (w['typo'],)),
      'config_file_missing': Row(['main', '--config=configs/digits.py', f'--workdir={w["typo"]}'],
                                 'Config file configs/digits.py not found \\(tried '
                                 f'{re.escape(os.path.join(tmp, "configs", "digits.py"))}\\); '
                                 'run from the tod_jax repository root or pass an absolute '
                                 f'path, e.g. --config={re.escape(DIGITS)}', (w['typo'],)),
      'read_only_new_run': Row(main(read_only_new), f'Cannot write to {read_only_new}: '
                               r'.*; make it writable or pass another --workdir',
                               (read_only_new,), read_only=(read_only_new,)),
      'read_only_analyze': Row(['analyze', f'--workdir={copy("ro_analyze")}'],
                               r'Cannot write to .*ro_analyze/analysis: .*; pass --out=DIR',
                               (new('ro_analyze'),), read_only=(new('ro_analyze'),)),
      'workdir_is_a_file': Row(main(a_file), f'--workdir {a_file} is a file; pass a directory',
                               (a_file,)),
      'ctrl_c': Row(main(interrupted, '--config.num_cycles=5', '--config.num_epochs=10'),
                    'cycle (\\d) was (?:cut short|not started), cycle (\\d) is kept .*; resume with: python -m '
                    f'tod_jax.main --config={DIGITS} --workdir={interrupted}',
                    interrupt_when=os.path.join(interrupted, 'metrics.jsonl')),
      'results_without_checkpoints': Row(
          main(copy('no_checkpoints', drop=('checkpoints',))),
          r'holds results of 1 cycle\(s\) \(metrics.jsonl\) but no checkpoints .* pass '
          r'--fresh_start', (new('no_checkpoints'),)),
      'missing_flag': Row(['main', f'--config={DIGITS}'],
                          'Flag --workdir must have a value other than None; see --help'),
      'unexpected_argument': Row(main(w['typo'], 'extra'),
                                 r"Unexpected arguments: \['extra'\]; see --help", (w['typo'],)),
      'compare_seeds': Row(['compare', f'--config={DIGITS}', f'--workdir={w["cmp"]}',
                            '--seeds=zero'], "--seeds takes ints separated by commas; got 'zero'",
                           (w['cmp'],)),
      # docs/errors.md's list: these were one line already; now nothing is written either.
      'unknown_strategy': Row(main(w['strategy'], '--config.strategy=oracle'),
                              "Unknown strategy 'oracle'; set --config.strategy to one of",
                              (w['strategy'],)),
      'another_config': Row(main(copy('another'), '--config.learning_rate=0.5'),
                            r'holds a run with another config \(learning_rate: 0.05 there, 0.5 '
                            r'now\); use a new --workdir', (new('another'),)),
      'damaged_checkpoint': Row(main(damaged, '--config.num_cycles=2'),
                                r'Cannot restore checkpoint .*checkpoints/1 .*move that '
                                'directory away', (damaged,)),
      'bad_label_file': Row(['label', f'--workdir={ledger}', f'--labels={zebra}'],
                            r"'b.png' have a label that is not a class; use one of \['cat', "
                            r"'dog'\]. Nothing was imported", (ledger, zebra)),
      'compare_unknown_strategy': Row(['compare', f'--config={DIGITS}', f'--workdir={w["cmp"]}',
                                       '--strategies=cod,oracle', '--seeds=0'],
                                      "Unknown strategy 'oracle'", (w['cmp'],)),
      'analyze_no_run': Row(['analyze', f'--workdir={empty}'], 'holds no tod_jax run', (empty,)),
      'select_no_candidate': Row(['select', f'--candidates={empty}', f'--config={DIGITS}'],
                                 'No candidate checkpoint in', (empty,)),
      'query_no_run': Row(['query', f'--workdir={empty}'], 'holds no run yet', (empty,)),
      # Not mistakes: a finished run reports and writes nothing, even read-only.
      'finished_again': Row(main(copy('finished_again')),
                            r'Run .*finished_again is finished \(1 of 1 cycles\): results in '
                            r'.*finished_again/metrics.jsonl', (new('finished_again'),), code=0),
      'finished_read_only': Row(main(copy('finished_ro')), r'finished_ro is finished',
                                (new('finished_ro'),), code=0, read_only=(new('finished_ro'),)),
  }
  for command in COMMANDS:
    rows[f'help_{command}'] = Row([command, '--help'], r'^flags:$', code=0)
  return rows


@pytest.fixture(scope='module')
def table(tmp_path_factory, finished):
  """{row name: (row, result, snapshots before, snapshots after)}, the commands run at once."""
  tmp = str(tmp_path_factory.mktemp('table'))
  rows = _rows(tmp, finished)
  read_only_ok = _can_mount_read_only()
  todo = {name: row for name, row in rows.items() if read_only_ok or not row.read_only}
  before = {name: [_snapshot(p) for p in row.watched] for name, row in todo.items()}
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futures = {name: pool.submit(_run, row, tmp) for name, row in todo.items()}
    results = {name: f.result() for name, f in futures.items()}
  return {name: (row, results.get(name), before.get(name),
                 [_snapshot(p) for p in row.watched] if name in todo else None)
          for name, row in rows.items()}


ROW_NAMES = ['budget', 'num_cycles', 'no_data_dir', 'no_tfds_data', 'non_image_file',
             'config_field_typo', 'config_file_missing', 'read_only_new_run', 'read_only_analyze',
             'workdir_is_a_file', 'ctrl_c', 'results_without_checkpoints', 'missing_flag',
             'unexpected_argument', 'compare_seeds', 'unknown_strategy', 'another_config',
             'damaged_checkpoint', 'bad_label_file', 'compare_unknown_strategy',
             'analyze_no_run', 'select_no_candidate', 'query_no_run', 'finished_again',
             'finished_read_only'] + [f'help_{c}' for c in COMMANDS]


def test_the_table_lists_every_row(tmp_path, finished):
  assert sorted(_rows(str(tmp_path), finished)) == sorted(ROW_NAMES)


@pytest.mark.parametrize('name', ROW_NAMES)
def test_command_line(table, name):
  row, result, before, after = table[name]
  if result is None:
    pytest.skip('no way to make a directory read-only for a command here (root without '
                'mount namespaces)')
  output = result.stdout + result.stderr
  assert result.returncode == row.code, (result.returncode, output[-3000:])
  assert 'Traceback' not in output, output[-3000:]
  assert after == before, 'the command changed a file it was given'
  if row.code == 0:
    assert any(re.search(row.message, line) for line in output.splitlines()), output[-3000:]
    return
  assert 'libtpu' not in result.stderr  # JAX's probe for a TPU is filtered (cli._quiet).
  lines = [line for line in result.stderr.splitlines()
           if line.strip() and not LOG_RECORD.match(line)]
  assert len(lines) == 1, lines
  kind = 'interrupted' if row.interrupt_when else 'error'
  prefix = f'tod_jax.{row.argv[0]}: {kind}: '
  assert lines[0].startswith(prefix), lines[0]
  assert re.search(row.message, lines[0][len(prefix):]), lines[0]


def test_ctrl_c_names_the_cycle_kept_on_disk(table):
  row, result, _, _ = table['ctrl_c']
  cut, kept = map(int, re.search(row.message, result.stderr).groups())
  checkpoints = os.listdir(os.path.join(os.path.dirname(row.interrupt_when), 'checkpoints'))
  assert cut == kept + 1 and max(map(int, checkpoints)) == kept >= 1


# Python API rows: tod_jax.run and Dataset.from_arrays.

class NoSowNet(nn.Module):
  """A user's model that sows nothing into 'intermediates'."""
  num_classes: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout=None):
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


@pytest.fixture
def no_sow_net():
  """The model registered for one test (conftest puts the registry back afterwards)."""
  tod_jax.register_model('no_sow_net', NoSowNet)


def _api_config(**changes):
  """The tiny config with `changes`, as a user sets them: `config.field = value`."""
  config = tiny_config()
  for field, value in changes.items():
    setattr(config, field, value)
  return config


def _typo_in_group():
  config = tiny_config()
  config.precision.scor = 'highest'
  return config


def _digits_arrays():
  images = np.zeros((40, 8, 8, 1), np.uint8)
  return images, np.arange(40) % 2


API_ROWS = {
    'config_field_typo': (lambda w: tod_jax.run(_api_config(num_epoch=3), w), ConfigError,
                          r"Unknown config field 'num_epoch' \(did you mean 'num_epochs'\?\)"),
    'group_field_typo': (lambda w: tod_jax.run(_typo_in_group(), w), ConfigError,
                         r"Unknown config field 'precision.scor' \(did you mean "
                         r"'precision.score'\?\)"),
    'model_sows_no_features': (
        lambda w: tod_jax.run(_api_config(model='no_sow_net'), w), ConfigError,
        r"Model 'no_sow_net' sows no 'features' \(read by tod_loss_form='reference'; add "
        r"self.sow\('intermediates', 'features', x\)"),
    'model_sows_no_stages': (
        lambda w: tod_jax.run(_api_config(model='no_sow_net', strategy='ll4al', semi=False), w),
        ConfigError, r"sows no 'stage<i>' \(read by strategy 'll4al' .*f'stage\{i\}'"),
    'budget': (lambda w: tod_jax.run(_api_config(initial_fraction=1.0), w), ConfigError,
               'but the pool has 1437'),
    'unknown_dataset': (lambda w: tod_jax.run(_api_config(dataset='mnist'), w), ConfigError,
                        "Unknown dataset 'mnist'"),
    'unknown_model': (lambda w: tod_jax.run(_api_config(model='vit'), w), ConfigError,
                      "Unknown model 'vit'"),
    'bad_value': (lambda w: tod_jax.run(_api_config(num_epochs=0), w), ConfigError,
                  'must be at least 1'),
    'float_images': (lambda w: tod_jax.Dataset.from_arrays(
        np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, int), np.zeros((0, 8, 8, 1)),
        np.zeros(0, int)), DataError, 'must be uint8'),
    'unlabeled_pool_with_oracle': (lambda w: tod_jax.run(
        _api_config(dataset='mine'), w, dataset=tod_jax.Dataset.from_arrays(
            _digits_arrays()[0], np.full(40, -1), *_digits_arrays(), num_classes=2)),
        DataError, 'pool samples without labels'),
}


@pytest.mark.parametrize('name', sorted(API_ROWS))
def test_python_api(tmp_path, name, no_sow_net):
  call, error, message = API_ROWS[name]
  workdir = str(tmp_path / 'run')
  with pytest.raises(error, match=message) as caught:
    call(workdir)
  assert '\n' not in str(caught.value)
  assert not os.path.exists(workdir)


def test_results_without_checkpoints_start_over_only_when_asked(finished, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished, workdir, ignore=shutil.ignore_patterns('checkpoints'))
  before = _snapshot(workdir)
  with pytest.raises(MissingFileError, match='fresh_start=True'):
    tod_jax.run(tiny_config(), workdir)
  assert _snapshot(workdir) == before
  records = tod_jax.run(tiny_config(), workdir, fresh_start=True)
  assert [r['cycle'] for r in records] == [1] and os.listdir(os.path.join(workdir, 'checkpoints'))


def test_a_finished_run_rewrites_nothing(finished):
  before = _snapshot(finished)
  mtimes = {f: os.stat(os.path.join(finished, f)).st_mtime_ns for f in ('config.json',
                                                                      'metrics.jsonl')}
  assert [r['cycle'] for r in tod_jax.run(tiny_config(), finished)] == [1]
  assert _snapshot(finished) == before
  assert mtimes == {f: os.stat(os.path.join(finished, f)).st_mtime_ns for f in mtimes}


def test_the_command_modules_import_together():
  """Flags are defined when a command runs, not at import (absl's DuplicateFlagError)."""
  code = ('import tod_jax.main, tod_jax.compare, tod_jax.select, tod_jax.query, tod_jax.label, '
          'tod_jax.launch, tod_jax.analyze\n'
          'from absl import flags\n'
          "print(sorted({'workdir', 'config', 'strategies', 'candidates'} & set(flags.FLAGS)))")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, env=cpu_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '[]'


def test_unwritable_directory_errors_name_the_directory_and_the_fix(tmp_path):
  with pytest.raises(errors.UnwritableError, match=r'Cannot write to D: .* \(F\); fix it\.'):
    with errors.writing('D', 'fix it'):
      raise PermissionError(13, 'Permission denied', 'F')
  with pytest.raises(FileNotFoundError):  # Not the directory's fault: a bug, as it was.
    with errors.writing('D'):
      raise FileNotFoundError(2, 'No such file or directory', 'F')


def test_models_that_sow_what_a_run_reads_pass(tmp_path, no_sow_net):
  model = models.create_model('small_cnn', 10)
  models.check_intermediates('small_cnn', model, (8, 8, 1),
                             {models.FEATURES: ['x'], models.STAGES: ['y']})
  models.check_intermediates('no_sow_net', models.create_model('no_sow_net', 10), (8, 8, 1),
                             {models.FEATURES: [], models.STAGES: []})  # Nothing read.
