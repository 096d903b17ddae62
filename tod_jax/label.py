"""Command line: import a person's labels for the current query into the run's ledger.

  python -m tod_jax.label --workdir=DIR --labels=labels.csv

labels.csv has a header with `sample_id` and `label` (a class name); other columns
are ignored, so the query CSV with a filled-in `label` column works too. Rows with
an empty label are skipped: labeling part of a query is allowed, the rest go back
to the pool. Any invalid row stops the import with nothing recorded.
"""

from absl import flags

from tod_jax import cli, label_sources

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_string('workdir', None, 'The run directory (holds labels.json).')
  flags.DEFINE_string('labels', None, 'CSV file with columns sample_id,label.')
  flags.mark_flags_as_required(['workdir', 'labels'])


def summary(result: dict, workdir: str) -> str:
  text = (f'Recorded {result["imported"]} labels for the query of cycle {result["cycle"]} '
          f'({result["imported"]} of {result["queried"]} queried samples')
  if result['unlabeled']:
    text += (f'; partial labeling: {result["unlabeled"]} stay unlabeled and go back to the '
             'pool unless labeled before the next query')
  return text + f'). Next: python -m tod_jax.query --workdir={workdir}'


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  try:
    result = label_sources.import_labels(FLAGS.workdir, FLAGS.labels)
  except OSError as e:  # A labels file that cannot be read.
    raise label_sources.LabelImportError(f'{e}; check the --labels path.') from e
  print(summary(result, FLAGS.workdir))


if __name__ == '__main__':
  cli.run(main, define_flags)
