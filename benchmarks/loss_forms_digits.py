"""Cycle-1 test accuracy on digits for each form of the TOD loss (docs/method.md, "Why the paper's
form of the loss hurt").

  python benchmarks/loss_forms_digits.py [--seeds=0,1,2,3,4] [--workdir=runs/loss_forms]

Cycle 1 trains on the same random labeled set whatever the loss, so its accuracy measures
training alone. One JSON line per (variant, seed), then one per variant with the mean.
"""

import os
import sys
import tempfile

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import digits  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import driver  # noqa: E402

# (name, config overrides).
VARIANTS = (
    ('off', {'semi': False}),
    ('paper', {'tod_loss_form': 'paper'}),
    ('paper, lambda / 10 (the code\'s mean over classes)',
     {'tod_loss_form': 'paper', 'tod_weight': 0.005}),
    ('paper, no EMA warm-up', {'tod_loss_form': 'paper', 'ema_warmup': False}),
    ('reference (default)', {}),
)
flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds.')
flags.DEFINE_string('workdir', '', 'Where the runs go (default: a temporary directory).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  with tempfile.TemporaryDirectory() as tmp:
    root = FLAGS.workdir or tmp
    for v, (name, overrides) in enumerate(VARIANTS):
      accuracies = []
      for seed in map(int, FLAGS.seeds):
        config = digits.get_config()
        config.update(dict(overrides, num_cycles=1, seed=seed, progress_bar=False,
                           tensorboard=False))
        (record,) = driver.run(config, os.path.join(root, f'variant{v}_seed{seed}'))
        accuracies.append(100 * record['test_accuracy'])
        bench_utils.emit({'variant': name, 'seed': seed, 'cycle1_accuracy': accuracies[-1]})
      bench_utils.emit({'variant': name, 'seeds': len(accuracies),
                        'mean_cycle1_accuracy': float(np.mean(accuracies))})


if __name__ == '__main__':
  app.run(main)
