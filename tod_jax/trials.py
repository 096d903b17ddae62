"""A comparison's runs, one after another in this process or K at a time in worker processes.

  records = trials.run_trials([(run_config, workdir), ...], processes, device_config)

With K > 1, K worker processes are spawned (fresh interpreters, nothing shared with this
one). Each first calls driver.setup_devices(device_config), as the command line does
before a sequential comparison, then takes runs one at a time and calls driver.run on
each: a run computes what it computes alone, in its own workdir, resumed or skipped when
finished. The first run that fails stops the comparison: the other workers are terminated
(each of their runs keeps its last finished cycle; checkpoints are written atomically) and
its error is raised here, a UserError as itself (one line on the command line), anything
else as TrialError with the worker's traceback. Ctrl-C terminates the workers the same way.

How many at once (auto_processes, for processes = 0): on the CPU, one per core (at most
MAX_AUTO_PROCESSES) for a small model, whose run leaves cores idle; 1 for a large one,
whose run already splits the CPU into one XLA device per core (devices.auto_cpu_devices).
On a GPU or TPU 1: concurrent processes on one GPU are not measured here, and a TPU is
held by one process. Set K yourself on a GPU (docs/strategies.md, "Comparing strategies"); the
workers then grow their GPU memory as they need it (XLA_PYTHON_CLIENT_PREALLOCATE=false)
instead of each taking 75% of it.
"""

import multiprocessing
import os
import pickle
import signal
import traceback
from multiprocessing import connection
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
from absl import flags, logging

from tod_jax import cli, devices, driver, models
from tod_jax.errors import ConfigError, UserError

MAX_AUTO_PROCESSES = 8
# XLA:GPU's allocator settings that make a process share the device (any one set by the
# user is kept).
GPU_SHARING = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
GPU_MEMORY_VARIABLES = ('XLA_PYTHON_CLIENT_PREALLOCATE', 'XLA_PYTHON_CLIENT_MEM_FRACTION',
                        'XLA_PYTHON_CLIENT_ALLOCATOR')


class TrialError(RuntimeError):
  """A run failed in a worker process with an error that is not a UserError (a bug)."""


def auto_processes(config: ml_collections.ConfigDict, num_trials: int, platform: str,
                   cores: Optional[int] = None, large_model: Optional[bool] = None) -> int:
  """The worker count of processes=0 (module docstring); at least 1, at most num_trials."""
  if platform != 'cpu' or config.distributed.enabled:
    return 1
  if large_model is None:
    large_model = devices.is_large_model(lambda: models.parameter_count(config.model))
  if large_model:
    return 1
  cores = cores or os.cpu_count() or 1
  return max(1, min(cores, MAX_AUTO_PROCESSES, num_trials))


def resolve_processes(processes: int, config: ml_collections.ConfigDict,
                      num_trials: int) -> int:
  """`processes`, or auto_processes for 0; ConfigError for a negative count or K > 1 with
  config.distributed. Only the auto count starts JAX here (to see the platform)."""
  if processes < 0:
    raise ConfigError(f'--parallel must be 0 (auto) or a positive count; got {processes}.')
  if processes > 1 and config.distributed.enabled:
    raise ConfigError('--parallel > 1 runs several single-host runs at once; with '
                      '--config.distributed.enabled=True pass --parallel=1.')
  if processes == 0:
    return auto_processes(config, num_trials, jax.default_backend())
  return min(processes, max(num_trials, 1))


def run_one(config: ml_collections.ConfigDict, workdir: str, fresh_start: bool) -> list[dict]:
  """One run (tod_jax.driver.run); returns its metrics records."""
  logging.info('Run %s (strategy %s, seed %d)', workdir, config.strategy, config.seed)
  return driver.run(config, workdir, fresh_start=fresh_start)


def run_trials(trials: Sequence[tuple[ml_collections.ConfigDict, str]], processes: int,
               device_config: ml_collections.ConfigDict, fresh_start: bool = False
               ) -> list[list[dict]]:
  """Every (run config, workdir)'s records, in order: here for processes <= 1, else in
  `processes` workers set up with `device_config` (module docstring)."""
  if processes <= 1:
    return [run_one(config, workdir, fresh_start) for config, workdir in trials]
  for name, value in GPU_SHARING.items():
    if not any(v in os.environ for v in GPU_MEMORY_VARIABLES):
      os.environ[name] = value  # Inherited by the workers; CPU runs ignore it.
  tasks = [(config.to_dict(), workdir, fresh_start) for config, workdir in trials]
  return pool_map(_run_task, tasks, processes, _start_worker, (device_config.to_dict(),),
                  labels=[os.path.basename(os.path.normpath(w)) for _, w in trials])


def _start_worker(device_config: dict) -> None:
  """A worker's setup: log lines as on the command line, the devices of a sequential run."""
  flags.FLAGS.mark_as_parsed()  # absl logs through its handler only once flags are parsed.
  logging.use_absl_handler()  # absl.app.run does this on the command line.
  cli.setup_logging()
  driver.setup_devices(ml_collections.ConfigDict(device_config))


def _run_task(config: dict, workdir: str, fresh_start: bool) -> list[dict]:
  return run_one(ml_collections.ConfigDict(config), workdir, fresh_start)


class _Prefix:
  """A logging filter that starts every line with `[label] `."""

  def __init__(self, label: str):
    self.label = label

  def filter(self, record: Any) -> bool:
    record.msg = f'[{self.label}] {record.msg}'
    return True


def _worker(conn: Any, function: Callable, initializer: Optional[Callable],
            initargs: tuple) -> None:
  """A worker process: serve, with Ctrl-C left to the parent (which stops the workers)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  serve(conn, function, initializer, initargs)


def serve(conn: Any, function: Callable, initializer: Optional[Callable],
          initargs: tuple) -> None:
  """`function(*task)` for each (label, task) received, until None or EOF; sends (True,
  result) or (False, (exception or None, traceback text)) and stops at the first failure."""
  started = False
  while True:
    try:
      item = conn.recv()
    except EOFError:
      return
    if item is None:
      return
    label, task = item
    prefix = _Prefix(label)
    try:
      if not started and initializer is not None:
        initializer(*initargs)
      started = True
      logging.get_absl_handler().addFilter(prefix)
      try:
        result = function(*task)
      finally:
        logging.get_absl_handler().removeFilter(prefix)
      conn.send((True, result))
    except BaseException as e:  # pylint: disable=broad-except
      conn.send((False, _portable(e)))
      return


def _portable(error: BaseException) -> tuple[Optional[BaseException], str]:
  """(the exception if it survives pickling, else None; its traceback text)."""
  text = ''.join(traceback.format_exception(error))
  try:
    return pickle.loads(pickle.dumps(error)), text
  except Exception:  # pylint: disable=broad-except
    return None, text


def pool_map(function: Callable, tasks: Sequence[tuple], processes: int,
             initializer: Optional[Callable] = None, initargs: tuple = (),
             labels: Optional[Sequence[str]] = None) -> list:
  """[function(*task) for task in tasks], computed in `processes` spawned workers (each
  runs `initializer(*initargs)` once); the first failure stops it (module docstring)."""
  labels = list(labels or [str(i) for i in range(len(tasks))])
  context = multiprocessing.get_context('spawn')
  workers = []
  for _ in range(min(processes, len(tasks))):
    here, there = context.Pipe()
    process = context.Process(target=_worker, args=(there, function, initializer, initargs),
                              daemon=True)
    process.start()
    there.close()
    workers.append((process, here))
  queue, results, busy = list(range(len(tasks))), {}, {}
  try:
    for worker in workers:
      _dispatch(worker, queue, busy, tasks, labels)
    while busy:
      ready = connection.wait([w[1] for w in busy] + [w[0].sentinel for w in busy])
      for worker in [w for w in busy if w[1] in ready or w[0].sentinel in ready]:
        index = busy.pop(worker)
        results[index] = receive(worker, labels[index])
        _dispatch(worker, queue, busy, tasks, labels)
  except KeyboardInterrupt as e:
    raise KeyboardInterrupt('the runs in progress keep their last finished cycle') from e
  finally:
    for process, conn in workers:
      if process.is_alive() and (busy or queue):
        process.terminate()
      elif process.is_alive():
        try:
          conn.send(None)
        except OSError:  # It has just exited.
          pass
      process.join()
      conn.close()
  return [results[i] for i in range(len(tasks))]


def _dispatch(worker: tuple, queue: list, busy: dict, tasks: Sequence[tuple],
              labels: Sequence[str]) -> None:
  if queue:
    index = queue.pop(0)
    busy[worker] = index
    try:
      worker[1].send((labels[index], tasks[index]))
    except OSError:  # The worker has died: its sentinel is ready, receive says so.
      pass


def receive(worker: tuple, label: str) -> Any:
  """The result a worker sent for task `label`; raises its error, or TrialError if it died."""
  process, conn = worker
  try:
    ok, value = conn.recv()
  except EOFError:
    process.join()
    raise TrialError(f'The worker process running {label} died (exit code '
                     f'{process.exitcode}); run it alone with --parallel=1 to see why.') from None
  if ok:
    return value
  error, text = value
  if isinstance(error, (UserError, KeyboardInterrupt)):
    raise error
  raise TrialError(f'{label} failed in its worker process:\n{text}')
