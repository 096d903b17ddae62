"""Side-by-side comparison: every strategy x seed, then a table and learning curves.

  python -m tod_jax.compare --config=configs/digits.py \
      --strategies=random,entropy,coreset,ll4al,cod --seeds=0,1,2 --workdir=DIR

Each run lives in DIR/<name>_seed<k> and is resumed or skipped when finished
(tod_jax.driver.run); `--parallel` runs several at once (tod_jax.trials). Writes
DIR/results.csv, DIR/summary.md (mean ± std per strategy and cycle, best mean per
cycle in bold; every strategy against --baseline paired by seed, tod_jax.paired; then
Table VI: seconds per query step), DIR/paired.csv and DIR/learning_curves.png, and
prints the paired table. `--summarize` writes them from the run directories in DIR
without running anything. `--ablation` runs Table I's variants instead of
--strategies; `--label_noise=0,0.2` repeats every run per label-noise probability
(Fig. 9), in DIR/<name>_noise<p>_seed<k>.
"""

import csv
import os
import platform
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags

from tod_jax import cli, devices, driver, errors, paired, run_rows, trials

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


def run_name(name: str) -> str:
  """A run name as its directories spell it."""
  return name.lower().replace('+', '_')


def run_dir(workdir: str, name: str, seed: int) -> str:
  return os.path.join(workdir, f'{run_name(name)}_seed{seed}')


def run_all(config: ml_collections.ConfigDict, names: Sequence[str], seeds: Sequence[int],
            workdir: str, ablation: bool = False,
            label_noises: Optional[Sequence[float]] = None,
            fresh_start: bool = False, processes: int = 1) -> list[dict]:
  """Runs (or resumes) every planned run, `processes` at a time (trials.run_trials; 0:
  trials.auto_processes); returns one row per (run, cycle).

  Every run's config is checked first, so a bad name fails before hours of training.
  `fresh_start`: as in driver.run, for every run.
  """
  runs = plan_runs(config, names, seeds, ablation, label_noises)
  for _, _, run_config in runs:
    driver.validate_config(run_config)
  processes = trials.resolve_processes(processes, config, len(runs))
  records = trials.run_trials([(c, run_dir(workdir, n, s)) for n, s, c in runs], processes,
                              config, fresh_start)
  return [run_rows.row(name, seed, record, run_config.label_noise)
          for (name, seed, run_config), run in zip(runs, records) for record in run]


def write_csv(rows: Sequence[dict], path: str, fields: Sequence[str] = FIELDS) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows({k: r[k] for k in fields} for r in rows)


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


def plot_learning_curves(rows: Sequence[dict], path: str, title: str = '',
                         baseline: Optional[str] = None) -> None:
  """Accuracy vs. % labeled: mean line and 95% interval band per strategy; with a
  `baseline`, a second panel of the paired differences and their 95% intervals."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  bands = paired.accuracy_bands(rows)
  colors = {name: f'C{i % 10}' for i, name in enumerate(bands)}  # The same in both panels.
  results = [p for p in paired.paired_stats(rows, baseline) if len(p.cycles) == 1
             ] if baseline else []
  curves = {name: [(p.labeled_percent, p.interval.mean,
                    p.interval.mean if p.interval.low is None else p.interval.low,
                    p.interval.mean if p.interval.high is None else p.interval.high)
                   for p in results if p.strategy == name] for name in bands}
  curves = {name: tuple(np.array(v) for v in zip(*c)) for name, c in curves.items() if c}
  fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12.0 if curves else 6.4, 4.4),
                           squeeze=False)
  panels = [(axes[0, 0], bands, 'test accuracy (%): mean, 95% interval', title)]
  if curves:
    panels.append((axes[0, 1], curves, f'minus {baseline}, paired by seed (points)',
                   f'against {baseline}: mean difference, 95% interval'))
    axes[0, 1].axhline(0.0, color='k', linewidth=0.8)
  for ax, lines, ylabel, heading in panels:
    for name, (frac, mean, low, high) in lines.items():
      ax.plot(frac, mean, marker='o', markersize=3, label=name, color=colors[name])
      ax.fill_between(frac, low, high, alpha=0.2, color=colors[name])
    ax.set_xlabel('labeled (% of pool)')
    ax.set_ylabel(ylabel)
    ax.set_title(heading)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def paired_table(rows: Sequence[dict], baseline: Optional[str]) -> tuple[list, str]:
  """(paired.paired_stats against `baseline` (paired.choose_baseline among the rows' names),
  their markdown table)."""
  baseline = paired.choose_baseline(list(dict.fromkeys(r['strategy'] for r in rows)), baseline)
  results = paired.paired_stats(rows, baseline)
  return results, paired.markdown(results, baseline)


def write_outputs(rows: Sequence[dict], workdir: str, title: str, machine: str,
                  baseline: Optional[str]) -> None:
  """results.csv, paired.csv, summary.md (accuracy, paired against `baseline`, Table VI
  timed on `machine`) and learning_curves.png in `workdir`."""
  results, table = paired_table(rows, baseline)
  with errors.writing(workdir):
    os.makedirs(workdir, exist_ok=True)
    write_csv(rows, os.path.join(workdir, 'results.csv'))
    write_csv(paired.csv_rows(results), os.path.join(workdir, 'paired.csv'), paired.FIELDS)
    with open(os.path.join(workdir, 'summary.md'), 'w') as f:
      f.write(summary_markdown(rows) + '\n' + table + '\n' +
              sampling_time_markdown(rows, machine))
    plot_learning_curves(rows, os.path.join(workdir, 'learning_curves.png'), title,
                         results[0].baseline if results else None)


def compare(config: ml_collections.ConfigDict, names: Sequence[str], seeds: Sequence[int],
            workdir: str, ablation: bool = False,
            label_noises: Optional[Sequence[float]] = None,
            fresh_start: bool = False, baseline: Optional[str] = None,
            processes: int = 1) -> list[dict]:
  """Runs everything, `processes` at a time (0: auto; run_all), then writes
  write_outputs' files with every run paired against `baseline` (paired.choose_baseline)."""
  plan = plan_runs(config, names, seeds, ablation, label_noises)
  baseline = paired.choose_baseline([n for n, _, _ in plan], baseline)
  processes = trials.resolve_processes(processes, config, len(plan))
  rows = run_all(config, names, seeds, workdir, ablation, label_noises, fresh_start, processes)
  if not devices.is_writer():  # Multi-host: every process ran every run; process 0 writes.
    return rows
  machine = machine_name() + (f'; {processes} runs at a time' if processes > 1 else '')
  write_outputs(rows, workdir,
                f'{config.dataset}: ' + ('ablation' if ablation else 'query strategies'),
                machine, baseline)
  return rows


def summarize(workdir: str, names: Optional[Sequence[str]] = None,
              seeds: Optional[Sequence[int]] = None, baseline: Optional[str] = None
              ) -> list[dict]:
  """write_outputs from the run directories in `workdir` (run_rows.find_runs), running
  nothing; names as the directories spell them (run_name); Table VI names no machine (a
  run directory does not record it)."""
  runs = run_rows.find_runs(workdir, None if names is None else [run_name(n) for n in names],
                            seeds)
  rows = run_rows.read_rows(runs)
  write_outputs(rows, workdir, os.path.basename(os.path.normpath(workdir)),
                'the machine that ran them (not recorded in the run directories)', baseline)
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
  flags.DEFINE_string('baseline', None, 'The run name every other is paired with by seed '
                      "(paired.csv, summary.md); default: 'random' if compared, else the first.")
  flags.DEFINE_integer('parallel', 0, 'Runs at once, each in a worker process; 0: auto (one '
                       'per core for a small model on a CPU, else 1; tod_jax.trials).')
  flags.DEFINE_bool('summarize', False, 'Only write the outputs from the run directories '
                    'already in --workdir (all, or those of --strategies and --seeds if '
                    'given); runs nothing and needs no --config.')
  cli.define_config_flag()
  cli.define_fresh_start_flag()
  flags.mark_flags_as_required(['workdir'])


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
  baseline = FLAGS.baseline
  if FLAGS.summarize:
    given = lambda flag, value: value if FLAGS[flag].present else None
    baseline = baseline and run_name(baseline)
    rows = summarize(FLAGS.workdir, given('strategies', FLAGS.strategies), given('seeds', seeds),
                     baseline)
  elif FLAGS.config is None:
    raise app.UsageError('--config is required (except with --summarize)')
  else:
    driver.setup_devices(FLAGS.config)  # Before any other JAX call.
    rows = compare(FLAGS.config, FLAGS.strategies, seeds, FLAGS.workdir, FLAGS.ablation,
                   label_noises, FLAGS.fresh_start, baseline, FLAGS.parallel)
  if devices.is_writer():
    print(paired_table(rows, baseline)[1], end='')  # As in summary.md.


if __name__ == '__main__':
  cli.run(main, define_flags)
