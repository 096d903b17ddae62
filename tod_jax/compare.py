"""Side-by-side comparison: every strategy x seed, then a table and learning curves.

  python -m tod_jax.compare --config=configs/digits.py \
      --strategies=random,entropy,coreset,ll4al,cod --seeds=0,1,2 --workdir=DIR

Each run lives in DIR/<name>_seed<k> and is resumed or skipped when finished
(tod_jax.driver.run). Writes DIR/results.csv, DIR/summary.md (mean ± std per
strategy and cycle, best mean per cycle in bold, then Table VI: seconds per
query step) and DIR/learning_curves.png. `--ablation` runs Table I's variants
instead of --strategies; `--label_noise=0,0.2` repeats every run per label-noise
probability (Fig. 9), in DIR/<name>_noise<p>_seed<k>.
"""

import csv
import os
import platform
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from tod_jax import cli, devices, driver, errors

# Table I: (row name, strategy, semi).
ABLATION = (('Base', 'random', False), ('Base+Semi', 'random', True),
            ('Base+Active', 'cod', False), ('Base+Semi+Active', 'cod', True))
FIELDS = ('strategy', 'seed', 'cycle', 'num_labeled', 'labeled_fraction', 'test_accuracy',
          'label_noise', 'score_seconds')


def plan_runs(config: ml_collections.ConfigDict, names: Sequence[str], seeds: Sequence[int],
              ablation: bool = False, label_noises: Optional[Sequence[float]] = None
              ) -> list[tuple[str, int, ml_collections.ConfigDict]]:
  """(row name, seed, run config) for every variant, label-noise probability and seed.

  Without `label_noises` every run keeps config.label_noise and its plain name;
  with them, variant `name` at probability p is named `name_noise<p>`.
  """
  variants = (ABLATION if ablation else [(n, n, config.semi) for n in names])
  noises = [None] if label_noises is None else [float(p) for p in label_noises]
  runs = []
  for noise in noises:
    for name, strategy, semi in variants:
      for seed in seeds:
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.strategy, run_config.semi, run_config.seed = strategy, semi, int(seed)
        row_name = name
        if noise is not None:
          run_config.label_noise, row_name = noise, f'{name}_noise{noise:g}'
        runs.append((row_name, int(seed), run_config))
  return runs


def run_dir(workdir: str, name: str, seed: int) -> str:
  return os.path.join(workdir, f"{name.lower().replace('+', '_')}_seed{seed}")


def run_all(config: ml_collections.ConfigDict, names: Sequence[str], seeds: Sequence[int],
            workdir: str, ablation: bool = False,
            label_noises: Optional[Sequence[float]] = None,
            fresh_start: bool = False) -> list[dict]:
  """Runs (or resumes) every planned run; returns one row per (run, cycle).

  Every run's config is checked first, so a bad name fails before hours of training.
  `fresh_start`: as in driver.run, for every run.
  """
  runs = plan_runs(config, names, seeds, ablation, label_noises)
  for _, _, run_config in runs:
    driver.validate_config(run_config)
  rows = []
  for name, seed, run_config in runs:
    path = run_dir(workdir, name, seed)
    logging.info('Run %s, seed %d -> %s', name, seed, path)
    for record in driver.run(run_config, path, fresh_start=fresh_start):
      rows.append({'strategy': name, 'seed': seed, 'cycle': record['cycle'],
                   'num_labeled': record['num_labeled'],
                   'labeled_fraction': record['labeled_fraction'],
                   'test_accuracy': record['test_accuracy'],
                   'label_noise': run_config.label_noise,
                   'score_seconds': record['score_seconds']})
  return rows


def write_csv(rows: Sequence[dict], path: str) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, FIELDS)
    writer.writeheader()
    writer.writerows({k: r[k] for k in FIELDS} for r in rows)


def aggregate(rows: Sequence[dict]) -> dict:
  """{name: {cycle: (labeled %, mean accuracy %, sample std %, #seeds)}}, names in row order."""
  grouped: dict = {}
  for r in rows:
    grouped.setdefault(r['strategy'], {}).setdefault(r['cycle'], []).append(r)
  out = {}
  for name, cycles in grouped.items():
    out[name] = {}
    for cycle, group in sorted(cycles.items()):
      acc = 100.0 * np.array([r['test_accuracy'] for r in group])
      std = float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0
      frac = 100.0 * float(np.mean([r['labeled_fraction'] for r in group]))
      out[name][cycle] = (frac, float(np.mean(acc)), std, len(acc))
  return out


def summary_markdown(rows: Sequence[dict]) -> str:
  """Markdown table: one row per strategy, one column per cycle, best mean in bold."""
  stats = aggregate(rows)
  cycles = sorted({c for per in stats.values() for c in per})
  labeled = {c: next(per[c][0] for per in stats.values() if c in per) for c in cycles}
  best = {c: max(per[c][1] for per in stats.values() if c in per) for c in cycles}
  seeds = sorted({r['seed'] for r in rows})
  lines = [f'Test accuracy (%), mean ± sample std over seeds {seeds}; best mean per cycle '
           'in bold.', '',
           '| strategy | ' + ' | '.join(f'{labeled[c]:.0f}% labeled' for c in cycles) + ' |',
           '|---|' + '---|' * len(cycles)]
  for name, per in stats.items():
    cells = []
    for c in cycles:
      if c not in per:
        cells.append('—')
        continue
      cell = f'{per[c][1]:.1f} ± {per[c][2]:.1f}'
      cells.append(f'**{cell}**' if np.isclose(per[c][1], best[c]) else cell)
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def machine_name() -> str:
  """The processor and JAX devices that timed the runs, in words."""
  devices = jax.devices()
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; JAX '
          f'{jax.__version__} on {len(devices)} x {devices[0].device_kind} '
          f'({devices[0].platform})')


def sampling_time_markdown(rows: Sequence[dict], machine: str) -> str:
  """Table VI: seconds for one query step (score + select) per strategy, mean over cycles
  and seeds, on `machine`."""
  grouped: dict = {}
  for r in rows:
    grouped.setdefault(r['strategy'], []).append((r['cycle'], r['score_seconds']))
  lines = [f'Seconds for one query step (score + select; Table VI), mean ± sample std over '
           f'cycles and seeds, on {machine}. The first cycle of a run includes compilation; '
           'the third column leaves it out.', '',
           '| strategy | seconds per query step | without cycle 1 | query steps |',
           '|---|---|---|---|']
  for name, timed in grouped.items():
    seconds = [t for _, t in timed]
    later = [t for c, t in timed if c > 1]
    std = float(np.std(seconds, ddof=1)) if len(seconds) > 1 else 0.0
    lines.append(f'| {name} | {np.mean(seconds):.2f} ± {std:.2f} | '
                 f"{f'{np.mean(later):.2f}' if later else '—'} | {len(seconds)} |")
  return '\n'.join(lines) + '\n'


def plot_learning_curves(rows: Sequence[dict], path: str, title: str = '') -> None:
  """Accuracy vs. % labeled: mean line and ±std band per strategy."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for name, per in aggregate(rows).items():
    frac, mean, std, _ = (np.array(v) for v in zip(*per.values()))
    ax.plot(frac, mean, marker='o', markersize=3, label=name)
    ax.fill_between(frac, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel('labeled (% of pool)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def compare(config: ml_collections.ConfigDict, names: Sequence[str], seeds: Sequence[int],
            workdir: str, ablation: bool = False,
            label_noises: Optional[Sequence[float]] = None,
            fresh_start: bool = False) -> list[dict]:
  """Runs everything, then writes results.csv, summary.md and learning_curves.png."""
  rows = run_all(config, names, seeds, workdir, ablation, label_noises, fresh_start)
  if not devices.is_writer():  # Multi-host: every process ran every run; process 0 writes.
    return rows
  with errors.writing(workdir):
    os.makedirs(workdir, exist_ok=True)
    write_csv(rows, os.path.join(workdir, 'results.csv'))
    with open(os.path.join(workdir, 'summary.md'), 'w') as f:
      f.write(summary_markdown(rows) + '\n' + sampling_time_markdown(rows, machine_name()))
    plot_learning_curves(rows, os.path.join(workdir, 'learning_curves.png'),
                         f'{config.dataset}: ' + ('ablation' if ablation else 'query strategies'))
  return rows


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_string('workdir', None, 'Directory for all runs and the comparison outputs.')
  flags.DEFINE_list('strategies', ['random', 'cod'], 'Strategy names to compare.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds, one run per strategy and seed.')
  flags.DEFINE_bool('ablation', False, 'Table I rows (Base, +Semi, +Active, +Semi+Active) '
                    'instead of --strategies.')
  flags.DEFINE_list('label_noise', None, 'Label-noise probabilities to sweep (e.g. 0,0.2; '
                    'Fig. 9); each run is repeated per value. Default: config.label_noise only.')
  cli.define_config_flag()
  cli.define_fresh_start_flag()
  flags.mark_flags_as_required(['config', 'workdir'])


def _numbers(flag: str, kind: type) -> Optional[list]:
  """The values of list flag --`flag` as `kind`s (None if not given)."""
  values = FLAGS[flag].value
  try:
    return None if values is None else [kind(v) for v in values]
  except ValueError as e:
    raise app.UsageError(f'--{flag} takes {kind.__name__}s separated by commas; got '
                         f'{",".join(values)!r}') from e


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  seeds, label_noises = _numbers('seeds', int), _numbers('label_noise', float)
  driver.setup_devices(FLAGS.config)  # Before any other JAX call.
  compare(FLAGS.config, FLAGS.strategies, seeds, FLAGS.workdir, FLAGS.ablation, label_noises,
          FLAGS.fresh_start)


if __name__ == '__main__':
  cli.run(main, define_flags)
