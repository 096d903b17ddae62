"""Runs at once: the worker count, and the worker pool's failures (the first stops the rest)."""

import multiprocessing
import os
import threading
import time

import ml_collections
import pytest

from tod_jax import trials
from tod_jax.errors import ConfigError


def _config(distributed=False):
  return ml_collections.ConfigDict({'distributed': {'enabled': distributed}})


def test_auto_count_is_one_per_core_for_a_small_model_on_a_cpu_only():
  small = lambda platform, cores=2, runs=20, **kw: trials.auto_processes(
      _config(**kw), runs, platform, cores=cores, large_model=False)
  assert small('cpu') == 2 and small('cpu', cores=64) == trials.MAX_AUTO_PROCESSES
  assert small('cpu', runs=1) == 1
  assert small('gpu') == 1 and small('tpu') == 1 and small('cpu', distributed=True) == 1
  assert trials.auto_processes(_config(), 20, 'cpu', cores=2, large_model=True) == 1


def test_explicit_counts():
  assert trials.resolve_processes(5, _config(), 2) == 2  # No more workers than runs.
  assert trials.resolve_processes(1, _config(distributed=True), 4) == 1
  with pytest.raises(ConfigError, match='--parallel must be 0'):
    trials.resolve_processes(-1, _config(), 2)
  with pytest.raises(ConfigError, match='--parallel=1'):
    trials.resolve_processes(2, _config(distributed=True), 2)


def _task(kind, arg):
  """A worker's task: square a number, raise a user error or a bug, wait (writes its pid to
  `arg`, then waits to be stopped), or die once the waiting worker has started."""
  if kind == 'square':
    return arg * arg
  if kind == 'fail':
    raise ConfigError('bad value for --config.x; set it to 1.')
  if kind == 'bug':
    return {}['missing']
  if kind == 'wait':
    with open(arg, 'w') as f:
      f.write(str(os.getpid()))
  while kind == 'wait' or not os.path.exists(arg):
    time.sleep(0.05)
  os._exit(3)  # 'die'  pylint: disable=protected-access


def _served(task, label='seed7'):
  """What the parent makes of a worker's answer to `task` (serve in a thread, no process)."""
  here, there = multiprocessing.Pipe()
  thread = threading.Thread(target=trials.serve, args=(there, _task, None, ()))
  thread.start()
  here.send((label, task))
  try:
    return trials.receive((None, here), label)
  finally:
    if thread.is_alive():  # It answered and waits for the next task.
      here.send(None)
    thread.join()


def test_a_user_error_keeps_its_type_and_a_bug_its_traceback(tmp_path):
  with pytest.raises(ConfigError, match=r'^bad value for --config.x; set it to 1.$'):
    _served(('fail', str(tmp_path)))
  with pytest.raises(trials.TrialError, match=r"(?s)seed7 failed in its.*KeyError: 'missing'"):
    _served(('bug', ''))
  assert _served(('square', 3)) == 9


def test_first_failure_stops_the_other_workers(tmp_path):
  pid_file = str(tmp_path / 'waiting.pid')
  with pytest.raises(trials.TrialError, match=r'running seed8 died \(exit code 3\)'):
    trials.pool_map(_task, [('wait', pid_file), ('die', pid_file)], 2, labels=['s', 'seed8'])
  with open(pid_file) as f:
    pid = int(f.read())
  with pytest.raises(ProcessLookupError):  # Terminated and reaped.
    os.kill(pid, 0)
