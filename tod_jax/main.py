"""Command line: `python -m tod_jax.main --config=configs/digits.py --workdir=DIR`.

Config fields are overridden with `--config.key=value`. For several hosts, run the
same command on every host with `--config.distributed=True` (README, "Scale").
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from tod_jax import cli_logging, driver, input_pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and TensorBoard.')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli_logging.setup_logging()
  driver.setup_devices(FLAGS.config)  # Before any other JAX call.
  try:
    driver.run(FLAGS.config, FLAGS.workdir)
  except input_pipeline.DatasetNotPreparedError as e:
    sys.exit(f'error: {e}')  # The message says what to do; a traceback would bury it.


if __name__ == '__main__':
  app.run(main)
