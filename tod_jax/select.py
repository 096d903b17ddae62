"""Command line: rank trained candidates on the unlabeled test set (paper Section V).

`python -m tod_jax.select --candidates=DIR1,DIR2,... --config=configs/digits.py`

Prints each method's model-level ranking and, where the test set has labels,
Table III (top-k hit rates) and Table IV (sample-level selection accuracy).
"""

import os
import sys
from typing import Sequence, TextIO

from absl import app, flags

from tod_jax import candidates as candidates_lib
from tod_jax import cli, datasets, driver, model_selection
from tod_jax.model_selection import METHOD_NAMES

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_list('candidates', None, 'Candidate directories (written by tod_jax.candidates).')
  cli.define_config_flag('A configs/*.py file: dataset, model, score_output (f of Eq. 10), '
                         'score_chunk_size.')
  flags.DEFINE_string('baseline', candidates_lib.DEFAULT_BASELINE,
                      "Baseline checkpoint of each candidate, e.g. '1epoch' or '20steps'.")
  flags.DEFINE_list('methods', list(model_selection.METHODS), 'Methods to compare.')
  flags.DEFINE_integer('draws', 1000, 'Random candidate subsets per top-k setting.')
  flags.DEFINE_integer('seed', 0, 'Seed of the candidate subsets.')
  flags.mark_flags_as_required(['candidates', 'config'])


def report(names: Sequence[str], outputs: Sequence[model_selection.CandidateOutputs],
           labels, methods: Sequence[str], output: str, draws: int, seed: int,
           stream: TextIO = sys.stdout) -> None:
  """Prints the rankings and, if `labels` is not None, the evaluation."""
  print('Model-level ranking (best first; score: smaller is better):', file=stream)
  for method in methods:
    scores = model_selection.model_scores(method, outputs, output)
    order = model_selection.rank(scores)
    print(f'  {METHOD_NAMES.get(method, method)}: ' +
          ', '.join(f'{names[i]} ({scores[i]:.4g})' for i in order), file=stream)
  if labels is None:
    return
  evaluation = model_selection.evaluate(outputs, labels, methods, output, draws, seed)
  print('\nTest accuracy of single models: ' + ', '.join(
      f'{n} {100 * a:.1f}' for n, a in zip(names, evaluation.accuracies)), file=stream)
  print('\n' + model_selection.markdown_tables(names, evaluation), file=stream)


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  for method in FLAGS.methods:
    if method not in model_selection.METHODS:
      raise app.UsageError(f'Unknown method {method!r} in --methods; use some of '
                           f'{sorted(model_selection.METHODS)}.')
  config = FLAGS.config
  driver.setup_devices(config)  # Before any other JAX call.
  dataset = datasets.load_dataset(config)
  outputs = model_selection.load_outputs(FLAGS.candidates, config, dataset, FLAGS.baseline)
  labels = dataset.test_labels if dataset.test_labels is not None and len(
      dataset.test_labels) else None
  names = [os.path.basename(os.path.normpath(d)) for d in FLAGS.candidates]
  report(names, outputs, labels, FLAGS.methods, config.score_output, FLAGS.draws, FLAGS.seed)


if __name__ == '__main__':
  cli.run(main, define_flags)
