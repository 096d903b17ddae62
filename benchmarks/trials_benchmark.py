"""A comparison's runs at once against one after another: wall time, and equal results?

  python benchmarks/trials_benchmark.py --seeds=0,1,2,3,4,5,6,7,8,9 --strategies=cod,random \
      --parallel=1,2 [--rounds=5] [--workdir=DIR] [--config=configs/digits.py] \
      [--config.<field>=value]

For each --parallel count K (0: compare's auto count) runs `python -m tod_jax.compare
--parallel=K` over every strategy x seed in a fresh DIR/parallel<K> (a temporary DIR by
default) and prints one JSON line: wall time, the CPU seconds of the comparison's
processes, and how busy the machine was otherwise (CPU seconds of every process from
/proc/stat, less the comparison's, per second: cores that other work took; the 1-minute
load average at start and end, which counts the comparison's own processes). With
--rounds=R the seeds are split into R groups and the counts take turns group by group (in
reversed order every other round), so that other work on a shared machine falls on each
count alike; one line per count and group, then one with the totals. Then one line per
count after the first: the wall-time ratio to the first, and whether every run's
metrics.jsonl (without timings) and final labeled set equal the first count's.
"""

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import rundir, run_rows  # noqa: E402


def parse_flags(argv):
  fv = flags.FlagValues()
  flags.DEFINE_string('config', os.path.join(bench_utils.ROOT, 'configs', 'digits.py'),
                      'The comparison config.', flag_values=fv)
  flags.DEFINE_list('strategies', ['cod', 'random'], 'Strategies compared.', flag_values=fv)
  flags.DEFINE_list('seeds', [str(s) for s in range(10)], 'Seeds.', flag_values=fv)
  flags.DEFINE_list('parallel', ['1', '2'], 'compare --parallel counts to time (0: auto); '
                    'the first is the reference of the ratios.', flag_values=fv)
  flags.DEFINE_integer('rounds', 1, 'Seed groups the counts take turns on.', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'Keep the runs in DIR/parallel<K> (must not exist '
                      'yet); default: a temporary directory.', flag_values=fv)
  # --config.<field>=value pass through to every comparison.
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in argv if a.startswith('--config.')]
  fv(['trials_benchmark'] + [a for a in argv if a not in overrides])
  return fv, overrides


def _busy_cpu_seconds() -> Optional[float]:
  """CPU seconds every process has used since boot (/proc/stat), or None off Linux."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def time_compare(fv, overrides: list[str], workdir: str, parallel: int,
                 seeds: list[str]) -> dict:
  """Runs one comparison of `seeds` in `workdir` (log: workdir/compare.log); its JSON line."""
  os.makedirs(workdir, exist_ok=True)
  command = [sys.executable, '-m', 'tod_jax.compare', f'--config={fv.config}',
             f'--strategies={",".join(fv.strategies)}', f'--seeds={",".join(seeds)}',
             f'--workdir={workdir}', f'--parallel={parallel}', '--config.progress_bar=False',
             *overrides]
  load, busy, own = os.getloadavg()[0], _busy_cpu_seconds(), _children_cpu_seconds()
  start = time.perf_counter()
  with open(os.path.join(workdir, 'compare.log'), 'a') as log:
    subprocess.run(command, cwd=bench_utils.ROOT, check=True, stdout=log, stderr=log,
                   env=bench_utils.subprocess_env())
  wall = time.perf_counter() - start
  own = _children_cpu_seconds() - own
  others = None if busy is None else max(_busy_cpu_seconds() - busy - own, 0.0) / wall
  with open(os.path.join(workdir, 'summary.md')) as f:
    at_once = re.search(r'(\d+) runs at a time', f.read())
  runs = len(fv.strategies) * len(seeds)
  return bench_utils.emit({
      'impl': f'compare_parallel{parallel}', 'config': os.path.basename(fv.config),
      'overrides': overrides, 'strategies': fv.strategies, 'seeds': seeds,
      'runs': runs, 'parallel': parallel, 'runs_at_once': int(at_once[1]) if at_once else 1,
      'wall_seconds': wall, 'seconds_per_run': wall / runs, 'cpu_seconds': own,
      'other_processes_cores': others, 'load_average_1min': [load, os.getloadavg()[0]]})


def _timeless(records: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.endswith('seconds')} for r in records]


def differing_runs(reference: str, other: str) -> list[str]:
  """Run directories of `reference` whose records (without timings) or final labeled set
  differ in `other`."""
  out = []
  for _, _, path in run_rows.find_runs(reference):
    twin = os.path.join(other, os.path.basename(path))
    if (_timeless(rundir.read_metrics(path)) != _timeless(rundir.read_metrics(twin))
        or not np.array_equal(rundir.final_labeled(path), rundir.final_labeled(twin))):
      out.append(os.path.basename(path))
  return out


def total(lines: list[dict]) -> dict:
  """The line of one count over all its rounds: sums, and the time-weighted other load."""
  wall, runs = sum(x['wall_seconds'] for x in lines), sum(x['runs'] for x in lines)
  others = [x['other_processes_cores'] for x in lines]
  return bench_utils.emit({
      **lines[0], 'seeds': [s for x in lines for s in x['seeds']], 'runs': runs,
      'rounds': len(lines), 'wall_seconds': wall, 'seconds_per_run': wall / runs,
      'cpu_seconds': sum(x['cpu_seconds'] for x in lines),
      'other_processes_cores': None if None in others else sum(
          o * x['wall_seconds'] for o, x in zip(others, lines)) / wall,
      'load_average_1min': [x['load_average_1min'] for x in lines]})


def main(argv=None) -> list[dict]:
  fv, overrides = parse_flags(argv)
  counts = [int(k) for k in fv.parallel]
  groups = [[str(s) for s in g] for g in np.array_split(fv.seeds, fv.rounds) if len(g)]
  with tempfile.TemporaryDirectory() as tmp:
    root = fv.workdir or tmp
    if any(os.path.exists(os.path.join(root, f'parallel{k}')) for k in counts):
      raise SystemExit(f'{root}/parallel<K> exists: finished runs would be skipped, not timed.')
    per_count = {k: [] for k in counts}
    for i, seeds in enumerate(groups):
      for k in (counts if i % 2 == 0 else counts[::-1]):
        per_count[k].append(time_compare(fv, overrides, os.path.join(root, f'parallel{k}'),
                                         k, seeds))
    lines = [total(per_count[k]) if len(groups) > 1 else per_count[k][0] for k in counts]
    first = os.path.join(root, f'parallel{counts[0]}')
    for k, line in zip(counts[1:], lines[1:]):
      differing = differing_runs(first, os.path.join(root, f'parallel{k}'))
      lines.append(bench_utils.emit({
          **bench_utils.ratio(lines[0], line, 'wall_seconds'), 'identical': not differing,
          'runs_compared': lines[0]['runs'], 'differing_runs': differing}))
  return lines


if __name__ == '__main__':
  main()
