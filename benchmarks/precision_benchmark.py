"""How much of a run survives reduced precision: COD's query, accuracy, time (docs/scale.md,
"Precision and determinism").

  python benchmarks/precision_benchmark.py --mode=bfloat16 --seeds=0,1,2,3,4   # any machine
  python benchmarks/precision_benchmark.py --mode=tf32 --seeds=0,1,2           # a GPU
  python benchmarks/precision_benchmark.py --smoke                             # the tests

Every seed runs the config's whole protocol once per setting: --mode=bfloat16 compares
compute_dtype float32 with bfloat16 (the stand-in on a CPU, which computes float32 at every
matmul precision); --mode=tf32 compares config.precision 'highest' in every phase with
'default' (TF32 on recent GPUs, one bfloat16 pass on TPUs). Then, on the checkpoints of the
first (float32) run, each cycle's query pool is scored again with the reduced setting's
scorer: the overlap of the two top-b queries (COD, with cycle 1's lowest-score rule, and
entropy and margin), their Spearman correlation and the scoring seconds of each (compiled
first). JSON lines: one per run cycle, one per scored cycle and measure, then summaries
(mean over seeds per cycle).
"""

import os
import sys
import tempfile
import time

import ml_collections
import numpy as np
from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import analyze, driver, models, ranking, scoring, uncertainty  # noqa: E402
from tod_jax.errors import UserError  # noqa: E402
from tod_jax.strategies import cod as cod_strategy  # noqa: E402

# (setting name, config overrides); the first is the reference.
MODES = {
    'bfloat16': (('float32', {'compute_dtype': 'float32'}),
                 ('bfloat16', {'compute_dtype': 'bfloat16'})),
    # Matmul precision only: both train in float32 (compute_dtype 'auto' would be bfloat16 on
    # a GPU).
    'tf32': (('highest', {'compute_dtype': 'float32',
                          'precision': dict(train='highest', evaluate='highest',
                                            score='highest')}),
             ('default', {'compute_dtype': 'float32',
                          'precision': dict(train='default', evaluate='default',
                                            score='default')})),
}
MEASURES = {'entropy': uncertainty.entropy, 'margin': uncertainty.margin}


def parse_flags(argv):
  fv = bench_utils.config_flag_values('digits.py', argv)
  flags.DEFINE_enum('mode', 'bfloat16', list(MODES), 'What reduced precision means.',
                    flag_values=fv)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds: one run per setting each.', flag_values=fv)
  flags.DEFINE_string('workdir', '', 'Where the runs go (default: a temporary directory).',
                      flag_values=fv)
  flags.DEFINE_bool('smoke', False, '1 cycle of 1 epoch, one seed (for the tests).',
                    flag_values=fv)
  config = bench_utils.parse_run_config(fv, 'precision_benchmark', argv)
  if fv.smoke:
    config.num_cycles, config.num_epochs, fv.seeds = 1, 1, ['0']
  return fv, config


def _timed(fn):
  """(fn(), seconds of a second call: the first compiles)."""
  fn()
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def reduced_scorer(config: ml_collections.ConfigDict, run: analyze.Run) -> scoring.Scorer:
  """A Scorer of the run's model under `config`'s compute dtype and score precision."""
  model = models.create_model(config.model, run.dataset.num_classes, config.dropout_rate,
                              config.compute_dtype)
  return scoring.Scorer(model, run.dataset.mean, run.dataset.std, config.score_output,
                        config.score_chunk_size, run.scorer.mesh,
                        score_precision=config.precision.score,
                        evaluate_precision=config.precision.evaluate)


def query_overlap(workdir: str, reduced_config: ml_collections.ConfigDict, seed: int,
                  setting: str) -> list[dict]:
  """Each checkpointed cycle's query pool of the run in `workdir`, scored as it ran and with
  `reduced_config`'s scorer: overlap of the top-b, Spearman, seconds."""
  try:
    run = analyze.Run(workdir)
  except UserError as e:  # Segmentation, or labels by a person: no overlap to measure.
    return [bench_utils.emit({'kind': 'overlap', 'setting': setting, 'seed': seed,
                              'skipped': str(e)})]
  reduced = reduced_scorer(reduced_config, run)
  images, budget, lines = run.dataset.train_images, run.experiment.budget, []
  previous = run.experiment.init_variables
  try:
    for cycle in run.cycles:
      state, meta, _ = run.restore(cycle)
      labeled, _ = run.cycle_sets(meta)
      pool = np.setdiff1d(np.arange(run.dataset.pool_size), labeled)
      lowest = cod_strategy.takes_lowest(run.config, cycle)
      current = state.variables
      scores = {'cod': [_timed(lambda s=s: s.cod(current, previous, images, pool))
                        for s in (run.scorer, reduced)]}
      for name, measure in MEASURES.items():
        scores[name] = [_timed(lambda s=s, m=measure: s.uncertainty(current, m, images, pool))
                        for s in (run.scorer, reduced)]
      for name, ((full, full_s), (low, low_s)) in scores.items():
        sign = -1 if name == 'cod' and lowest else 1
        top = [set(ranking.top_b(sign * s, pool, budget)) for s in (full, low)]
        lines.append(bench_utils.emit({
            'kind': 'overlap', 'setting': setting, 'seed': seed, 'cycle': cycle,
            'measure': name, 'budget': budget, 'candidates': len(pool),
            'overlap': len(top[0] & top[1]) / budget,
            'spearman': analyze.spearman(full, low),
            'max_abs_difference': float(np.max(np.abs(np.asarray(full) - low))),
            'reference_seconds': full_s, 'reduced_seconds': low_s}))
      previous = current
  finally:
    run.close()
  return lines


def summaries(lines: list[dict]) -> list[dict]:
  """Mean (and sample std) over seeds per setting and cycle; mean overlap per cycle."""
  out = []
  runs = [l for l in lines if l['kind'] == 'run']
  for setting in dict.fromkeys(l['setting'] for l in runs):
    mine = [l for l in runs if l['setting'] == setting]
    cycles = sorted({l['cycle'] for l in mine})
    acc = np.array([[l['test_accuracy'] for l in mine if l['cycle'] == c] for c in cycles])
    seconds = {k: float(np.mean([l[k] for l in mine]))
               for k in ('train_seconds', 'evaluate_seconds', 'score_seconds')}
    out.append(bench_utils.emit({
        'kind': 'summary', 'setting': setting, 'seeds': acc.shape[1],
        'mean_accuracy': acc.mean(1).tolist(),
        'std_accuracy': (acc.std(1, ddof=1) if acc.shape[1] > 1 else 0 * acc[:, 0]).tolist(),
        'mean_accuracy_cycles_2_on': float(acc[1:].mean()) if len(acc) > 1 else None,
        **{f'mean_{k}_per_cycle': v for k, v in seconds.items()}}))
  overlaps = [l for l in lines if l['kind'] == 'overlap' and 'skipped' not in l]
  for measure in dict.fromkeys(l['measure'] for l in overlaps):
    mine = [l for l in overlaps if l['measure'] == measure]
    cycles = sorted({l['cycle'] for l in mine})
    per = lambda key: [float(np.mean([l[key] for l in mine if l['cycle'] == c])) for c in cycles]
    out.append(bench_utils.emit({
        'kind': 'overlap_summary', 'measure': measure, 'setting': mine[0]['setting'],
        'seeds': len({l['seed'] for l in mine}), 'cycles': cycles,
        'mean_overlap': per('overlap'), 'mean_spearman': per('spearman'),
        'mean_reference_seconds': per('reference_seconds'),
        'mean_reduced_seconds': per('reduced_seconds')}))
  return out


def main(argv=None) -> list[dict]:
  fv, config = parse_flags(argv)
  logging.set_verbosity(logging.WARNING)
  (reference, _), *reduced = MODES[fv.mode]
  lines = []
  with tempfile.TemporaryDirectory() as tmp:
    root = fv.workdir or tmp
    for seed in map(int, fv.seeds):
      configs = {}
      for name, overrides in MODES[fv.mode]:
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.update(dict(overrides, seed=seed))
        configs[name] = run_config
        workdir = os.path.join(root, f'{name}_seed{seed}')
        start = time.perf_counter()
        for record in driver.run(run_config, workdir):
          lines.append(bench_utils.emit({
              'kind': 'run', 'setting': name, 'seed': seed, 'cycle': record['cycle'],
              **{k: record[k] for k in ('test_accuracy', 'train_seconds', 'evaluate_seconds',
                                        'score_seconds')},
              **({'test_miou': record['test_miou']} if 'test_miou' in record else {})}))
        lines.append(bench_utils.emit({'kind': 'run_wall', 'setting': name, 'seed': seed,
                                       'wall_seconds': time.perf_counter() - start}))
      for name, _ in reduced:
        lines += query_overlap(os.path.join(root, f'{reference}_seed{seed}'), configs[name],
                               seed, name)
  return lines + summaries(lines)


if __name__ == '__main__':
  main()
