"""Peak host memory per process: one process, two processes each holding the whole pool,
and two processes each holding its block of the pool (config.distributed.host_pool).

Every process runs one cycle of a CIFAR-10-shaped run (the small CNN, 1 epoch, 1 % labeled,
COD over a 2,000-image pool subset) on TFDS's mock CIFAR-10 (`tfds.testing.mock_data`:
deterministic random images, no download) with --examples images per split, on one CPU
device per process (gloo collectives). Prints one JSON line per process, then one per setting
with the largest peak RSS of its processes:

  python benchmarks/host_pool_memory.py                 # 60,000 images per split
  python benchmarks/host_pool_memory.py --examples=2000 # quick
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SETTINGS = (('one_process', 1, False), ('two_processes_whole_pool', 2, False),
            ('two_processes_host_pool', 2, True))


def worker(args) -> None:
  """One process of a setting: the run, then its peak RSS as a JSON line."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from configs import cifar10  # pylint: disable=import-outside-toplevel
  from tod_jax import driver  # pylint: disable=import-outside-toplevel
  config = cifar10.get_config()
  config.update(model='small_cnn', num_cycles=1, num_epochs=1, batch_size=32,
                unlabeled_batch_size=32, initial_fraction=0.01, budget_fraction=0.01,
                pool_subset=2000, progress_bar=False, tensorboard=False,
                host_pool=args.host_pool, num_cpu_devices=1)
  if args.processes > 1:
    config.update(distributed=True, coordinator_address=f'localhost:{args.port}',
                  num_processes=args.processes, process_id=args.process_id)
  driver.setup_devices(config)
  with tfds.testing.mock_data(num_examples=args.examples):
    records = driver.run(config, args.workdir)
  print(json.dumps({'process_id': args.process_id, 'cycles': len(records),
                    'host_peak_rss_bytes':
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


def run_setting(name: str, processes: int, host_pool: bool, examples: int) -> list[dict]:
  import bench_utils  # pylint: disable=import-outside-toplevel
  from tod_jax import launch  # pylint: disable=import-outside-toplevel
  port = launch.free_port()
  env = bench_utils.subprocess_env(JAX_PLATFORMS='cpu',
                                   JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  with tempfile.TemporaryDirectory() as workdir:
    procs = [subprocess.Popen(
        [sys.executable, __file__, '--worker', f'--examples={examples}', f'--port={port}',
         f'--processes={processes}', f'--process_id={i}', f'--workdir={workdir}/run']
        + (['--host_pool'] if host_pool else []), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, cwd=ROOT) for i in range(processes)]
    outputs = [proc.communicate()[0] for proc in procs]
  if any(proc.returncode for proc in procs):
    raise RuntimeError(f'{name}: a process failed (exit codes {[p.returncode for p in procs]})')
  return [{'setting': name, 'examples_per_split': examples, **json.loads(line)}
          for out in outputs for line in out.splitlines() if line.startswith('{')]


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--examples', type=int, default=60000)
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--host_pool', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--port', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--processes', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--process_id', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--workdir', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker(args)
    return []
  import bench_utils  # pylint: disable=import-outside-toplevel
  lines = []
  for name, processes, host_pool in SETTINGS:
    per_process = run_setting(name, processes, host_pool, args.examples)
    lines += [bench_utils.emit(line) for line in per_process]
    lines.append(bench_utils.emit({
        'setting': name, 'processes': processes, 'host_pool': host_pool,
        'pool_bytes': args.examples * 32 * 32 * 3,
        'max_host_peak_rss_bytes': max(p['host_peak_rss_bytes'] for p in per_process)}))
  return lines


if __name__ == '__main__':
  main()
