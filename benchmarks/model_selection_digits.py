"""Model-selection experiment on digits (paper Tables III, IV and V), one command per pool.

`python benchmarks/model_selection_digits.py --pool=seeds [--workdir=runs/model_selection_digits]`

Candidate pools of the small CNN, TOD loss on the rest of the pool, each candidate
with baselines 5 steps, 20 steps, 1, 2 and 5 epochs before its end:
* `seeds`: 12 candidates with the same hyper-parameters (the digits config) and
  seeds 0..11, all on one fixed labeled fifth of the pool: the paper's
  "independently trained parameters" of one model;
* `seeds_subsets`: 12 candidates, seed k trained on its own random labeled fifth;
* `mixed`: 16 candidates, 4 seeds x 4 learning-rate / epoch settings, on the fixed fifth.
Writes the Table III / IV layouts (1-epoch baseline) and the Table V ablation to
WORKDIR/<pool>/tables.md. Candidates already in WORKDIR/<pool> are reused.
"""

import os
import sys

import ml_collections
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # pylint: disable=g-import-not-at-top,wrong-import-position
from tod_jax import candidates, datasets, model_selection  # noqa: E402

flags.DEFINE_string('workdir', 'runs/model_selection_digits', 'Candidates and tables.md.')
flags.DEFINE_enum('pool', 'seeds', ['seeds', 'seeds_subsets', 'mixed'], 'Candidate pool.')
flags.DEFINE_float('labeled_fraction', 0.2, 'Labeled fraction of the pool.')
flags.DEFINE_integer('draws', 1000, 'Random candidate subsets per top-k setting.')
FLAGS = flags.FLAGS

MIXED_SETTINGS = ({'learning_rate': 0.01, 'num_epochs': 20},
                  {'learning_rate': 0.03, 'num_epochs': 20},
                  {'learning_rate': 0.1, 'num_epochs': 20},
                  {'learning_rate': 0.05, 'num_epochs': 40})
INTERVALS = ('5steps', '20steps', '1epoch', '2epochs', '5epochs')


def pool_variants(pool: str, pool_size: int, labeled_size: int) -> list[tuple[dict, np.ndarray]]:
  """(config overrides, labeled set) per candidate of `pool`."""
  fixed = np.sort(np.random.default_rng(0).choice(pool_size, labeled_size, replace=False))
  if pool == 'mixed':
    return [(dict(s, seed=seed), fixed) for s in MIXED_SETTINGS for seed in range(4)]
  if pool == 'seeds':
    return [({'seed': seed}, fixed) for seed in range(12)]
  return [({'seed': seed}, np.sort(np.random.default_rng(100 + seed).choice(
      pool_size, labeled_size, replace=False))) for seed in range(12)]


def train(config, dataset, variants, root: str) -> list[str]:
  """Trains (or reuses) one candidate per variant under root/candidate_<i>."""
  directories = []
  for i, (overrides, labeled) in enumerate(variants):
    directory = os.path.join(root, f'candidate_{i:02d}')
    directories.append(directory)
    if not candidates.is_saved(directory):
      variant = ml_collections.ConfigDict(config.to_dict())
      variant.update(overrides)
      candidates.train_candidate(variant, dataset, labeled, directory, INTERVALS)
  return directories


def tables(config, dataset, variants, directories) -> str:
  """The candidate list, Tables III / IV (1-epoch baseline) and Table V as markdown."""
  names, labels = [os.path.basename(d) for d in directories], dataset.test_labels
  per_interval = {spec: model_selection.load_outputs(directories, config, dataset, spec)
                  for spec in INTERVALS}
  main_eval = model_selection.evaluate(per_interval[candidates.DEFAULT_BASELINE], labels,
                                       output=config.score_output, num_draws=FLAGS.draws)
  lines = [f'Pool `{FLAGS.pool}`: {len(names)} candidates, {len(variants[0][1])} labeled digits '
           f'each, {len(labels)} test images; top-k averaged over {FLAGS.draws} random subsets.',
           '', '| candidate | seed | learning rate | epochs | labeled set | test accuracy (%) |',
           '|---|---|---|---|---|---|']
  subset = 'own' if FLAGS.pool == 'seeds_subsets' else 'shared'
  lines += [f'| {n} | {o["seed"]} | {o.get("learning_rate", config.learning_rate)} | '
            f'{o.get("num_epochs", config.num_epochs)} | {subset} | {100 * a:.2f} |'
            for n, (o, _), a in zip(names, variants, main_eval.accuracies)]
  lines += ['', '**Table III / IV layout** (baseline 1 epoch before the end):', '',
            model_selection.markdown_tables(names, main_eval), '',
            '**Table V layout** (TOD with other baseline intervals):', '',
            '| baseline interval | sample-level accuracy (%) | Top-1(3) | Top-1(5) | Top-1(10) '
            '| Top-3(10) |', '|---|---|---|---|---|---|']
  for spec in INTERVALS:
    ev = model_selection.evaluate(per_interval[spec], labels, ['tod'], config.score_output,
                                  FLAGS.draws)
    lines.append(f'| {spec} | {100 * ev.sample_accuracy["tod"]:.2f} | ' + ' | '.join(
        f'{100 * ev.top_k["tod"][s]:.1f}' for s in model_selection.TOP_K_SETTINGS) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
  config = digits.get_config()
  config.progress_bar = False
  config.tensorboard = False
  dataset = datasets.load_dataset(config)
  variants = pool_variants(FLAGS.pool, dataset.pool_size,
                           int(round(FLAGS.labeled_fraction * dataset.pool_size)))
  root = os.path.join(FLAGS.workdir, FLAGS.pool)
  text = tables(config, dataset, variants, train(config, dataset, variants, root))
  with open(os.path.join(root, 'tables.md'), 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
