"""Model-selection experiment on digits (paper Tables III, IV and V), one command.

`python benchmarks/model_selection_digits.py [--workdir=runs/model_selection_digits]`

Trains 16 small-CNN candidates on one fixed labeled fifth of the digits pool
(4 seeds x 4 learning-rate / epoch settings, TOD loss on the rest of the pool),
each with baselines 5 steps, 20 steps, 1, 2 and 5 epochs before its end, then
writes the Table III / IV layouts (1-epoch baseline) and the Table V ablation
to WORKDIR/tables.md. Candidates already in WORKDIR are reused.
"""

import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # pylint: disable=g-import-not-at-top,wrong-import-position
from tod_jax import candidates, input_pipeline, model_selection  # noqa: E402

flags.DEFINE_string('workdir', 'runs/model_selection_digits', 'Candidates and tables.md.')
flags.DEFINE_float('labeled_fraction', 0.2, 'Fixed labeled fraction of the pool.')
flags.DEFINE_integer('draws', 1000, 'Random candidate subsets per top-k setting.')
FLAGS = flags.FLAGS

SEEDS = (0, 1, 2, 3)
SETTINGS = ({'learning_rate': 0.01, 'num_epochs': 20}, {'learning_rate': 0.03, 'num_epochs': 20},
            {'learning_rate': 0.1, 'num_epochs': 20}, {'learning_rate': 0.05, 'num_epochs': 40})
INTERVALS = ('5steps', '20steps', '1epoch', '2epochs', '5epochs')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
  config = digits.get_config()
  config.progress_bar = False
  config.tensorboard = False
  dataset = input_pipeline.load_dataset(config)
  labeled = np.sort(np.random.default_rng(0).choice(
      dataset.pool_size, int(round(FLAGS.labeled_fraction * dataset.pool_size)), replace=False))
  variants = [dict(s, seed=seed) for s in SETTINGS for seed in SEEDS]
  directories = candidates.train_pool(config, dataset, labeled, FLAGS.workdir, variants,
                                      INTERVALS)
  names = [os.path.basename(d) for d in directories]
  labels = dataset.test_labels

  per_interval = {spec: model_selection.load_outputs(directories, config, dataset, spec)
                  for spec in INTERVALS}
  main_eval = model_selection.evaluate(per_interval[candidates.DEFAULT_BASELINE], labels,
                                       output=config.score_output, num_draws=FLAGS.draws)
  lines = [f'{len(names)} candidates, {len(labeled)} labeled digits, '
           f'{len(labels)} test images; top-k averaged over {FLAGS.draws} random subsets.', '',
           '| candidate | seed | learning rate | epochs | test accuracy (%) |', '|---|---|---|---|---|']
  lines += [f'| {n} | {v["seed"]} | {v["learning_rate"]} | {v["num_epochs"]} | {100 * a:.2f} |'
            for n, v, a in zip(names, variants, main_eval.accuracies)]
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
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(FLAGS.workdir, 'tables.md'), 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
