"""Does COD estimate the loss on this run? Diagnostics over a run's checkpoints (Figs. 3, 5-7, 14).

  `python -m tod_jax.analyze --workdir=DIR [--compare_workdirs=DIR2,DIR3] [--out=OUT]`

For every checkpointed cycle c, on the cycle's unlabeled pool U_c (the whole
pool minus the set w_c was trained on):
* true loss: cross-entropy of w_c on the ground-truth label (the clean label even
  when the run trained with config.label_noise), so the run needs oracle labels;
* COD: ||f(x; w_c) - f(x; w_{c-1})|| (Eq. 5; w_0 = the run's initial weights), and
  COD against each snapshot the run kept with config.snapshot_intervals (Fig. 7);
* other scores the run can compute: entropy, margin, and LL4AL's predicted loss
  where the run trained that module.
Writes DIR/analysis/ (or --out): cycles.csv + fig3_cod_loss.png (means and Spearman per cycle),
loss_bins.csv + fig5_loss_bins.png (mean loss in COD-ranked bins), recall.csv +
fig6_recall.png (recall of the highest-loss samples), cod_intervals.csv +
fig7_cod_intervals.png (only if the run kept extra baselines), tsne.csv +
fig14_tsne.png (t-SNE of softmax outputs: labeled by class, queried in grey) and
summary.md.
"""

import csv
import dataclasses
import functools
import os
from typing import Sequence

import numpy as np
from absl import flags, logging

from tod_jax import checkpointing, cli, datasets, errors, files, ranking, rundir, uncertainty
from tod_jax import cycle as cycle_lib
from tod_jax.errors import UserError
from tod_jax.strategies import cod as cod_strategy

RECALL_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
SUBDIR = 'analysis'
UNWRITABLE_FIX = 'pass --out=DIR, a writable directory for the tables and figures'


# Pure measures (tested against hand-computed values).

def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation of two [n] vectors (ties get average ranks)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return float(stats.spearmanr(np.asarray(x), np.asarray(y)).statistic)


def binned_mean(scores: np.ndarray, values: np.ndarray, bin_fraction: float = 0.05
                ) -> np.ndarray:
  """Mean of `values` in bins of `bin_fraction` of the samples, by descending score (Fig. 5).

  Bin i holds ranks [round(i n f), round((i+1) n f)) (ties to the smaller index);
  returns [ceil(1 / f)] means, NaN for an empty bin.
  """
  scores, values = np.asarray(scores), np.asarray(values, np.float64)
  order = ranking.top_b(scores, np.arange(len(scores)), len(scores))
  num_bins = int(np.ceil(1 / bin_fraction - 1e-9))
  edges = np.minimum(np.round(np.arange(num_bins + 1) * bin_fraction * len(scores)),
                     len(scores)).astype(int)
  return np.array([values[order[a:b]].mean() if b > a else np.nan
                   for a, b in zip(edges[:-1], edges[1:])])


def recall_curve(scores: np.ndarray, losses: np.ndarray,
                 fractions: Sequence[float] = RECALL_FRACTIONS) -> np.ndarray:
  """Recall of the k highest-loss samples among the k highest-scored, k = round(f n) (Fig. 6).

  Returns [len(fractions)] values in [0, 1]; ties go to the smaller index.
  """
  n, index = len(losses), np.arange(len(losses))
  out = []
  for f in fractions:
    k = max(1, int(round(f * n)))
    hits = np.intersect1d(ranking.top_b(scores, index, k), ranking.top_b(losses, index, k))
    out.append(len(hits) / k)
  return np.array(out)


def per_sample_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """-log softmax(logits)[label], [n, K] and [n] -> [n] float64."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_z = np.log(np.exp(shifted).sum(-1))
  return log_z - shifted[np.arange(len(labels)), labels]


def _softmax(logits: np.ndarray) -> np.ndarray:
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# A run's checkpoints.

@dataclasses.dataclass
class CycleData:
  """What the analysis needs of one cycle; score arrays are aligned with `unlabeled`."""
  cycle: int
  labeled: np.ndarray  # The set w_c was trained on.
  queried: np.ndarray
  unlabeled: np.ndarray
  loss: np.ndarray
  scores: dict  # Name -> [len(unlabeled)]: 'cod', 'entropy', 'margin'[, 'll4al'].
  interval_cod: dict  # Interval spec -> COD against that snapshot; '' if none kept.
  steps_back: dict  # Interval spec -> steps back.


class Run:
  """A finished (or running) run in `workdir`, read through its checkpoint form (rundir)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.config = rundir.saved_config(workdir)
    if self.config.labels != 'oracle':
      raise UserError(f'{workdir} is a run with labels={self.config.labels!r}; the analysis '
                      'needs the ground-truth loss of every pool sample (an oracle benchmark).')
    self.dataset = datasets.load_dataset(self.config)  # Clean labels, no label noise.
    if self.dataset.is_segmentation:
      raise UserError(f'{workdir} is a segmentation run; tod_jax.analyze supports '
                      'classification runs only.')
    self.experiment = cycle_lib.setup(self.config, self.dataset)
    self.scorer = self.experiment.scorer
    self.checkpointer = checkpointing.Checkpointer(workdir)
    self.cycles = self.checkpointer.cycles()
    if not self.cycles:
      raise UserError(f'{workdir} has no checkpoints yet; analyze it after its first cycle.')

  def restore(self, cycle: int) -> tuple[cycle_lib.CycleState, dict, dict]:
    """(the state after `cycle`: w_c in .variables, its JSON part, its snapshots)."""
    return rundir.restore(self.checkpointer, cycle, self.experiment)

  def cycle_sets(self, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(the labeled set of the cycle, its query): meta['labeled'] is labeled ∪ queried."""
    queried = np.asarray(meta['queried'], np.int64)
    return np.setdiff1d(np.asarray(meta['labeled'], np.int64), queried), queried

  def close(self) -> None:
    self.checkpointer.close()


def collect(run: Run) -> list[CycleData]:
  """Losses and scores of every checkpointed cycle (w_{c-1}: the cycle before, or w_0)."""
  if run.cycles != list(range(1, len(run.cycles) + 1)):
    raise UserError(f'{run.workdir} has checkpoints of cycles {run.cycles}; the analysis needs '
                    'every cycle from 1 on (COD compares each with the one before).')
  out, previous = [], run.experiment.init_variables
  for cycle in run.cycles:
    state, meta, snapshots = run.restore(cycle)
    out.append(_cycle_data(run, cycle, state, meta, snapshots, previous))
    previous = state.variables
    logging.info('analysed cycle %d: %d unlabeled', cycle, len(out[-1].unlabeled))
  return out


def _cycle_data(run: Run, cycle: int, state: cycle_lib.CycleState, meta: dict,
                snapshots: dict, previous: dict) -> CycleData:
  images, labels = run.dataset.train_images, run.dataset.train_labels
  current = state.variables
  labeled, queried = run.cycle_sets(meta)
  unlabeled = np.setdiff1d(np.arange(run.dataset.pool_size), labeled)
  logits = run.scorer.logits(current, images, unlabeled)
  probs = _softmax(np.asarray(logits, np.float64))
  scores = {'cod': run.scorer.cod(current, previous, images, unlabeled),
            'entropy': np.asarray(uncertainty.entropy(probs)),
            'margin': np.asarray(uncertainty.margin(probs))}
  if state.loss_head is not None:
    scores['ll4al'] = run.scorer.predicted_loss(current, state.loss_head, images, unlabeled)
  interval_cod = {spec: run.scorer.cod(current, variables, images, unlabeled)
                  for spec, variables in snapshots.items()}
  if run.config.strategy == 'cod':  # The score that ranked this cycle's query.
    scores['cod_query'] = query_score(run.config, cycle, scores['cod'], interval_cod)
  return CycleData(cycle, labeled, queried, unlabeled,
                   per_sample_cross_entropy(logits, labels[unlabeled]),
                   {k: np.asarray(v, np.float64) for k, v in scores.items()},
                   interval_cod, dict(meta.get('extra_baselines_steps_back', {})))


def query_score(config, cycle: int, cod: np.ndarray, interval_cod: dict) -> np.ndarray:
  """The score whose largest values a `cod` run queried in `cycle`: COD against w_{c-1},
  negated where the cycle took the lowest (cod_first_cycle), or against the
  config.cod_interval snapshot."""
  if config.cod_interval != 'cycle':
    return interval_cod[config.cod_interval]
  return -np.asarray(cod) if cod_strategy.takes_lowest(config, cycle) else cod


def tsne_points(run: Run, cycle: int, max_labeled: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """2-D t-SNE of w_c's softmax outputs on (a sample of) the labeled set and the query.

  Returns (points [n, 2], class labels [n], is_queried [n] bool).
  """
  from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
  state, meta, _ = run.restore(cycle)
  labeled, queried = run.cycle_sets(meta)
  if len(labeled) > max_labeled:
    labeled = np.sort(np.random.default_rng(seed).choice(labeled, max_labeled, replace=False))
  indices = np.concatenate([labeled, queried])
  probs = _softmax(np.asarray(
      run.scorer.logits(state.variables, run.dataset.train_images, indices), np.float64))
  perplexity = float(min(30, max(2, (len(indices) - 1) // 3)))
  # Exact gradients are faster than Barnes-Hut below about a thousand points (measured here).
  method = 'exact' if len(indices) <= 1000 else 'barnes_hut'
  points = TSNE(2, perplexity=perplexity, init='pca', method=method,
                random_state=seed).fit_transform(probs)
  return (points, run.dataset.train_labels[indices],
          np.arange(len(indices)) >= len(labeled))


# Outputs.

def _pyplot():
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('tod_jax.analyze draws its figures with matplotlib, which is not '
                      "installed; install it with pip install 'tod_jax[plot]'.") from e
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)


def _bin_labels(bin_fraction: float, num_bins: int) -> list[str]:
  return [f'{100 * i * bin_fraction:g}-{100 * min(1, (i + 1) * bin_fraction):g}%'
          for i in range(num_bins)]


def analyze(workdir: str, compare_workdirs: Sequence[str] = (), tsne_cycle: int = 0,
            tsne_max_labeled: int = 1000, bin_fraction: float = 0.05, out_dir: str = '') -> str:
  """Writes every table and figure under `out_dir` (default workdir/analysis); returns it.

  The run is only read: a run on a read-only mount is analyzed into another `out_dir`.
  """
  _pyplot()  # Fails fast without matplotlib, before any work.
  out_dir = out_dir or os.path.join(workdir, SUBDIR)
  rundir.saved_config(workdir)  # Not a run: that first.
  with errors.writing(out_dir, UNWRITABLE_FIX):
    files.check_writable(out_dir)  # Before minutes of work, not after.
  run = Run(workdir)  # Checks the rest of the run before anything is written.
  try:
    data = collect(run)
    with errors.writing(out_dir, UNWRITABLE_FIX):
      os.makedirs(out_dir, exist_ok=True)
      _write_all(run, data, out_dir, compare_workdirs, tsne_cycle, tsne_max_labeled,
                 bin_fraction)
  finally:
    run.close()
  return out_dir


def _write_all(run: Run, data: list[CycleData], out_dir: str, compare_workdirs: Sequence[str],
               tsne_cycle: int, tsne_max_labeled: int, bin_fraction: float) -> None:
  path = functools.partial(os.path.join, out_dir)
  workdir = run.workdir
  summary = [f'# Loss-estimation diagnostics: {workdir}', '',
             f'{run.config.dataset}, strategy {run.config.strategy}, seed {run.config.seed}, '
             f'cycles {[d.cycle for d in data]}, label noise {run.config.label_noise}. True loss '
             "= cross-entropy of the cycle's model w_c on the clean label, over the cycle's "
             'unlabeled pool; COD = ||softmax(w_c) - softmax(w_{c-1})|| (w_0: initial weights).',
             "In a `cod` run, cod_query is the score whose largest values the query took: -COD "
             "in a cycle that took the lowest COD (cycle 1 with cod_first_cycle='lowest'), COD "
             'against the cod_interval snapshot where the run set one, else COD.', '']
  summary += _fig3(run, data, path) + [''] + _fig5(run, data, path, bin_fraction)
  summary += [''] + _fig6(run, data, path) + [''] + _fig7(run, data, path)
  summary += [''] + _fig14(run, data, path, compare_workdirs, tsne_cycle, tsne_max_labeled)
  files.write_atomic(path('summary.md'), '\n'.join(summary))


def _fig3(run: Run, data: list[CycleData], path) -> list[str]:
  """Fig. 3: mean COD and mean loss per cycle, with rank correlations.

  Writes its CSV and PNG; returns its summary lines.
  """
  plt, summary = _pyplot(), []
  names = list(data[0].scores)
  header = (['cycle', 'num_labeled', 'num_unlabeled', 'mean_cod', 'mean_loss']
            + [f'spearman_{n}' for n in names])
  rows = [[d.cycle, len(d.labeled), len(d.unlabeled), d.scores['cod'].mean(), d.loss.mean()]
          + [spearman(d.scores[n], d.loss) for n in names] for d in data]
  _write_csv(path('cycles.csv'), header, rows)
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  cycles = [d.cycle for d in data]
  ax.plot(cycles, [r[3] for r in rows], 'o-', color='C0', label='mean COD')
  ax.set_xlabel('cycle')
  ax.set_ylabel('mean COD', color='C0')
  twin = ax.twinx()
  twin.plot(cycles, [r[4] for r in rows], 's--', color='C3', label='mean loss')
  twin.set_ylabel('mean true loss (CE)', color='C3')
  ax.set_title('Fig. 3: COD and loss of the unlabeled pool')
  _save(fig, path('fig3_cod_loss.png'))
  summary += ['## Per cycle (Fig. 3): means and Spearman rank correlation with the true loss',
              '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  summary += ['| ' + ' | '.join(_fmt(v) for v in r) + ' |' for r in rows]
  return summary


def _fig5(run: Run, data: list[CycleData], path, bin_fraction: float) -> list[str]:
  """Fig. 5: mean loss in COD-ranked bins.

  Writes its CSV and PNG; returns its summary lines.
  """
  plt, summary = _pyplot(), []
  bins = np.array([binned_mean(d.scores['cod'], d.loss, bin_fraction) for d in data])
  labels = _bin_labels(bin_fraction, bins.shape[1])
  _write_csv(path('loss_bins.csv'), ['cycle'] + labels,
             [[d.cycle] + list(b) for d, b in zip(data, bins)])
  fig, ax = plt.subplots(figsize=(7, 3.8))
  for d, b in zip(data, bins):
    ax.plot(np.arange(len(b)), b, marker='o', markersize=3, label=f'cycle {d.cycle}')
  ax.set_xticks(np.arange(len(labels)), labels, rotation=60, fontsize=7)
  ax.set_xlabel('unlabeled samples in descending order of COD')
  ax.set_ylabel('mean true loss')
  ax.set_title('Fig. 5: loss in COD-ranked bins')
  ax.legend(fontsize=7, ncol=2)
  _save(fig, path('fig5_loss_bins.png'))
  summary += ['', '## Mean true loss in COD-ranked bins (Fig. 5), first 3 and last bin', '',
              '| cycle | ' + ' | '.join(labels[:3] + labels[-1:]) + ' | pool mean |',
              '|---|' + '---|' * 5]
  summary += [f'| {d.cycle} | ' + ' | '.join(_fmt(v) for v in list(b[:3]) + [b[-1]]) +
              f' | {_fmt(d.loss.mean())} |' for d, b in zip(data, bins)]
  return summary


def _fig6(run: Run, data: list[CycleData], path) -> list[str]:
  """Fig. 6: recall of the highest-loss samples.

  Writes its CSV and PNG; returns its summary lines.
  """
  plt, summary = _pyplot(), []
  names = list(data[0].scores)
  cycles = [d.cycle for d in data]
  recall = {n: np.array([recall_curve(d.scores[n], d.loss) for d in data]) for n in names}
  _write_csv(path('recall.csv'), ['score', 'cycle'] + [f'{f:g}' for f in RECALL_FRACTIONS],
             [[n, d.cycle] + list(r[i]) for n, r in recall.items()
              for i, d in enumerate(data)])
  # Cycle 1's COD compares with the initial weights (a different regime): its own panel.
  groups = [(f'cycle {cycles[0]}', slice(0, 1))]
  if len(data) > 1:
    groups.append((f'cycles {cycles[1]}-{cycles[-1]} (mean)', slice(1, None)))
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
  summary += ['', '## Recall of the highest-loss samples (Fig. 6)', '',
              '| score | cycles | ' + ' | '.join(f'{100 * f:g}%' for f in RECALL_FRACTIONS) +
              ' |', '|---|---|' + '---|' * len(RECALL_FRACTIONS)]
  for ax, (title, part) in zip(axes[0], groups):
    for n, r in recall.items():
      ax.plot(RECALL_FRACTIONS, r[part].mean(0), marker='o', markersize=3, label=n)
      summary.append(f'| {n} | {title} | ' +
                     ' | '.join(f'{v:.3f}' for v in r[part].mean(0)) + ' |')
    ax.plot(RECALL_FRACTIONS, RECALL_FRACTIONS, ':', color='grey', label='random (expected)')
    ax.set_xlabel('fraction of the unlabeled pool sampled')
    ax.set_ylabel('recall of the highest-loss samples')
    ax.set_title(f'Fig. 6: {title}', fontsize=10)
    ax.legend(fontsize=8)
  _save(fig, path('fig6_recall.png'))
  summary.append('| random (expected) | any | ' +
                 ' | '.join(f'{f:.3f}' for f in RECALL_FRACTIONS) + ' |')
  return summary


def _fig7(run: Run, data: list[CycleData], path) -> list[str]:
  """Fig. 7: COD over other numbers of gradient steps.

  Writes its CSV and PNG; returns its summary lines.
  """
  plt, summary = _pyplot(), []
  cycles = [d.cycle for d in data]
  summary += ['', '## COD over different numbers of gradient steps (Fig. 7)', '']
  if data[0].interval_cod:
    specs = ['1cycle'] + list(data[0].interval_cod)
    rows, curves = [], {s: [] for s in specs}
    for d in data:
      for spec in specs:
        score = d.scores['cod'] if spec == '1cycle' else d.interval_cod[spec]
        r = recall_curve(score, d.loss)
        curves[spec].append(r)
        rows.append([d.cycle, spec, d.steps_back.get(spec, 'cycle'), spearman(score, d.loss)]
                    + list(r))
    _write_csv(path('cod_intervals.csv'), ['cycle', 'baseline', 'steps_back', 'spearman'] +
               [f'recall_{f:g}' for f in RECALL_FRACTIONS], rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for spec, r in curves.items():
      ax.plot(RECALL_FRACTIONS, np.mean(r, 0), marker='o', markersize=3, label=f'COD {spec}')
    ax.set_xlabel('fraction of the unlabeled pool sampled')
    ax.set_ylabel('recall of the highest-loss samples')
    ax.set_title('Fig. 7: COD over different numbers of steps')
    ax.legend(fontsize=8)
    _save(fig, path('fig7_cod_intervals.png'))
    summary += ['Snapshots kept with config.snapshot_intervals (steps back clipped to the cycle), '
                "'1cycle' = w_{c-1}. Spearman rank correlation of each COD with the true loss "
                'per cycle:', '', '| baseline | ' + ' | '.join(f'cycle {c}' for c in cycles) +
                ' |', '|---|' + '---|' * len(cycles)]
    for spec in specs:
      summary.append(f'| {spec} | ' + ' | '.join(f'{r[3]:.3f}' for r in rows if r[1] == spec)
                     + ' |')
  else:
    summary.append('Skipped: this run kept no snapshots. Run it with e.g. '
                   "--config.snapshot_intervals='5steps,1epoch,5epochs' to get Fig. 7.")
  return summary


def _fig14(run: Run, data: list[CycleData], path, compare_workdirs: Sequence[str],
           tsne_cycle: int, tsne_max_labeled: int) -> list[str]:
  """Fig. 14: t-SNE of softmax outputs, side by side; writes CSV and PNG, returns summary."""
  plt, summary = _pyplot(), []
  workdir = run.workdir
  workdirs = [workdir] + [w for w in compare_workdirs if w]
  fig, axes = plt.subplots(1, len(workdirs), figsize=(4.2 * len(workdirs), 4.0), squeeze=False)
  tsne_rows = []
  for ax, wd in zip(axes[0], workdirs):
    other = run if wd == workdir else Run(wd)
    try:
      cycle = tsne_cycle or other.cycles[-1]
      points, classes, is_queried = tsne_points(other, cycle, tsne_max_labeled)
    finally:
      if other is not run:
        other.close()
    tsne_rows += [[wd, cycle, x, y, c, int(q)] for (x, y), c, q in
                  zip(points, classes, is_queried)]
    ax.scatter(*points[~is_queried].T, c=classes[~is_queried], cmap=_class_colors(plt, other),
               vmin=0, vmax=other.dataset.num_classes - 1, s=6)
    ax.scatter(*points[is_queried].T, c='grey', s=10, marker='x', zorder=3)
    ax.set_title(f'{other.config.strategy} (seed {other.config.seed}), cycle {cycle}',
                 fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  _write_csv(path('tsne.csv'), ['workdir', 'cycle', 'x', 'y', 'label', 'queried'], tsne_rows)
  _save(fig, path('fig14_tsne.png'))
  summary += ['', '## t-SNE of softmax outputs (Fig. 14)', '',
              'fig14_tsne.png: labeled samples coloured by class, the cycle\'s queried samples '
              f'as grey crosses; runs: {workdirs}.', '']
  return summary


def _class_colors(plt, run: Run):
  """Class colours without grey (grey marks the queried samples)."""
  from matplotlib.colors import ListedColormap  # pylint: disable=import-outside-toplevel
  if run.dataset.num_classes > 10:
    return plt.get_cmap('turbo')
  colors = list(plt.get_cmap('tab10').colors)
  colors[7] = (0.0, 0.0, 0.0)  # tab10's grey -> black.
  return ListedColormap(colors[:max(2, run.dataset.num_classes)])


def _fmt(value) -> str:
  return f'{value:.4f}' if isinstance(value, (float, np.floating)) else str(value)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_string('workdir', None, 'A run directory (python -m tod_jax.main --workdir).')
  flags.DEFINE_list('compare_workdirs', [], 'Other runs drawn beside it in the t-SNE figure.')
  flags.DEFINE_integer('tsne_cycle', 0, 'Cycle of the t-SNE figure; 0: the last one.')
  flags.DEFINE_integer('tsne_max_labeled', 1000, 'At most this many labeled points in t-SNE.')
  flags.DEFINE_float('bin_fraction', 0.05, 'Width of the COD-ranked bins of Fig. 5.')
  flags.DEFINE_string('out', '', 'Directory for the tables and figures; default: '
                      'WORKDIR/analysis (another one for a run on a read-only mount).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  out = analyze(FLAGS.workdir, FLAGS.compare_workdirs, FLAGS.tsne_cycle, FLAGS.tsne_max_labeled,
                FLAGS.bin_fraction, FLAGS.out)
  print(f'Wrote {out}')


if __name__ == '__main__':
  cli.run(main, define_flags)
