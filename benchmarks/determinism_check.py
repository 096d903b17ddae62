"""Does a run stopped and resumed in a new process end as the uninterrupted run? (docs/scale.md,
"Precision and determinism")

  python benchmarks/determinism_check.py                             # config.deterministic
  python benchmarks/determinism_check.py --config.deterministic=False
  python benchmarks/determinism_check.py --smoke                     # the tests

Runs `python -m tod_jax.main` three times, each in its own process: --cycles cycles
uninterrupted; --stop_after cycles; then the same workdir resumed to --cycles cycles
(num_cycles may change on resume). A new process compiles anew: on a GPU its autotuner
may pick other kernels, and some kernels sum in a different order each run. Prints one
JSON line: whether the final labeled sets and the per-cycle records (without timings) are
equal, the first cycle that differs, and the wall time of each process.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import rundir  # noqa: E402


def parse_flags(argv):
  fv = flags.FlagValues()
  flags.DEFINE_string('config', os.path.join(bench_utils.ROOT, 'configs', 'digits.py'),
                      'The run config.', flag_values=fv)
  flags.DEFINE_integer('cycles', 3, 'Cycles of the whole run.', flag_values=fv)
  flags.DEFINE_integer('stop_after', 1, 'Cycles before the stop.', flag_values=fv)
  flags.DEFINE_bool('smoke', False, '2 cycles of 1 epoch (for the tests).', flag_values=fv)
  # --config.<field>=value pass through to every run.
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in argv if a.startswith('--config.')]
  fv(['determinism_check'] + [a for a in argv if a not in overrides])
  if fv.smoke:
    fv.cycles, fv.stop_after = 2, 1
    overrides = ['--config.num_epochs=1', '--config.batch_size=32',
                 '--config.unlabeled_batch_size=16', *overrides]
  return fv, overrides


def _run(config: str, workdir: str, cycles: int, overrides: list[str]) -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'tod_jax.main', f'--config={config}',
                  f'--workdir={workdir}', f'--config.num_cycles={cycles}',
                  '--config.progress_bar=False', '--config.tensorboard=False', *overrides],
                 cwd=bench_utils.ROOT, check=True, capture_output=True, text=True,
                 env=bench_utils.subprocess_env())
  return time.perf_counter() - start


def _timeless(records: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.endswith('seconds')} for r in records]


def main(argv=None) -> list[dict]:
  fv, overrides = parse_flags(argv)
  with tempfile.TemporaryDirectory() as tmp:
    whole, resumed = os.path.join(tmp, 'whole'), os.path.join(tmp, 'resumed')
    walls = [_run(fv.config, whole, fv.cycles, overrides),
             _run(fv.config, resumed, fv.stop_after, overrides),
             _run(fv.config, resumed, fv.cycles, overrides)]
    records = [_timeless(rundir.read_metrics(d)) for d in (whole, resumed)]
    labeled = [rundir.final_labeled(d) for d in (whole, resumed)]
    config = rundir.saved_config(whole)
  differing = [a['cycle'] for a, b in zip(*records) if a != b]
  return [bench_utils.emit({
      'impl': 'tod_jax_determinism', 'config': os.path.basename(fv.config),
      'overrides': overrides, 'deterministic': config.deterministic, 'cycles': fv.cycles,
      'stop_after': fv.stop_after, 'same_labeled_set': bool(np.array_equal(*labeled)),
      'same_records': records[0] == records[1],
      'first_differing_cycle': differing[0] if differing else None,
      'test_accuracy': [[r['test_accuracy'] for r in rs] for rs in records],
      'wall_seconds': walls})]


if __name__ == '__main__':
  main()
