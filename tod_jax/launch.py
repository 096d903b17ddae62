"""Command line: a multi-process JAX cluster on this machine, one process per device group.

  python -m tod_jax.launch --num_processes=2 -- --config=configs/digits.py --workdir=runs/mp

starts `python -m tod_jax.main <args>` (or --module) once per process, each with
--config.distributed.enabled=True, the coordinator on a free localhost port, its process id
and (on CPU) --devices_per_process XLA CPU devices and JAX's gloo collectives. Each
output line is prefixed with `[p<i>] `. If a process fails, the others are stopped;
the exit code is the first failing process's (0 when all succeed). On real clusters
(TPU pod slices, several GPU hosts) run the same main command on every host instead
(docs/scale.md).
"""

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

from absl import flags

from tod_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_integer('num_processes', 2, 'Processes to start.')
  flags.DEFINE_integer('devices_per_process', 1, 'XLA CPU devices per process (CPU only).')
  flags.DEFINE_string('module', 'tod_jax.main', 'The tod_jax command each process runs.')
  flags.DEFINE_integer('port', 0, 'Coordinator port on localhost; 0: a free one.')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_argv(module: str, args: Sequence[str], process_id: int, num_processes: int,
                 port: int) -> list[str]:
  """The command line of process `process_id`."""
  return [sys.executable, '-u', '-m', module, *args, '--config.distributed.enabled=True',
          f'--config.distributed.coordinator_address=localhost:{port}',
          f'--config.distributed.num_processes={num_processes}', f'--config.distributed.process_id={process_id}']


def _forward(proc: subprocess.Popen, prefix: str) -> None:
  for line in proc.stdout:
    sys.stdout.write(f'{prefix}{line}')
    sys.stdout.flush()


def launch(args: Sequence[str], num_processes: int, devices_per_process: int = 1,
           module: str = 'tod_jax.main', port: int = 0) -> int:
  """Runs the processes to the end; returns the first non-zero exit code, else 0."""
  port = port or free_port()
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
             JAX_NUM_CPU_DEVICES=str(devices_per_process), PYTHONUNBUFFERED='1')
  procs = [subprocess.Popen(process_argv(module, args, i, num_processes, port), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  threads = [threading.Thread(target=_forward, args=(p, f'[p{i}] '), daemon=True)
             for i, p in enumerate(procs)]
  for t in threads:
    t.start()
  failed = 0
  while any(p.poll() is None for p in procs):
    codes = [p.poll() for p in procs]
    if not failed and any(c not in (None, 0) for c in codes):
      failed = next(c for c in codes if c not in (None, 0))
      for p in procs:  # A cluster cannot finish without one of its processes.
        if p.poll() is None:
          p.terminate()
    time.sleep(0.2)
  for t in threads:
    t.join()
  return failed or next((p.returncode for p in procs if p.returncode), 0)


def main(argv):
  sys.exit(launch(argv[1:], FLAGS.num_processes, FLAGS.devices_per_process, FLAGS.module,
                  FLAGS.port))


if __name__ == '__main__':
  cli.run(main, define_flags, positional=True)
