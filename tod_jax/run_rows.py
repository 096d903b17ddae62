"""A comparison's result rows (results.csv): from a run's records, or read back from the run
directories a comparison left (`compare --summarize`, which runs nothing).

A comparison keeps run `name`, seed k in WORKDIR/<name>_seed<k> (compare.run_dir: the
name in lower case, '+' as '_'); its metrics.jsonl has one record per finished cycle.
"""

import os
import re
from typing import Optional, Sequence

from tod_jax import rundir
from tod_jax.errors import MissingFileError

RUN_DIR = re.compile(r'(.+)_seed(\d+)')


def row(name: str, seed: int, record: dict, label_noise: float) -> dict:
  """results.csv's row of one cycle's metrics record."""
  return {'strategy': name, 'seed': seed, 'cycle': record['cycle'],
          'num_labeled': record['num_labeled'], 'labeled_fraction': record['labeled_fraction'],
          'test_accuracy': record['test_accuracy'], 'label_noise': label_noise,
          'score_seconds': record['score_seconds']}


def find_runs(workdir: str, names: Optional[Sequence[str]] = None,
              seeds: Optional[Sequence[int]] = None) -> list[tuple[str, int, str]]:
  """(name, seed, path) of every <name>_seed<k> directory in `workdir` with a metrics.jsonl,
  by name (in `names` order if given, else sorted) and seed; only `names` and `seeds` if
  given. MissingFileError if there is none."""
  found = []
  for entry in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
    match = RUN_DIR.fullmatch(entry)
    path = os.path.join(workdir, entry)
    if match and os.path.isfile(os.path.join(path, rundir.METRICS)):
      found.append((match.group(1), int(match.group(2)), path))
  if names is not None:
    order = {n: i for i, n in enumerate(names)}
    found = sorted((f for f in found if f[0] in order), key=lambda f: (order[f[0]], f[1]))
  else:
    found.sort(key=lambda f: (f[0], f[1]))
  found = [f for f in found if seeds is None or f[1] in seeds]
  if not found:
    raise MissingFileError(
        f'{workdir} holds no run directory <name>_seed<k> with a {rundir.METRICS}'
        f'{" of the --strategies and --seeds given" if names or seeds else ""}; pass the '
        '--workdir of a comparison.')
  return found


def read_rows(runs: Sequence[tuple[str, int, str]]) -> list[dict]:
  """The rows of every (name, seed, path): its metrics.jsonl records, with the label noise
  of its config.json."""
  rows = []
  for name, seed, path in runs:
    noise = rundir.saved_config(path).get('label_noise', 0.0)
    rows += [row(name, seed, record, noise) for record in rundir.read_metrics(path)]
  return rows
