"""Command line: `python -m tod_jax.main --config=configs/digits.py --workdir=DIR`.

Config fields are overridden with `--config.key=value`. For several hosts, run the
same command on every host with `--config.distributed=True` (README, "Scale").
"""

from absl import app, flags
from ml_collections import config_flags

from tod_jax import cli, devices, driver

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and TensorBoard.')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  devices.setup_devices(FLAGS.config)  # Before any other JAX call.
  driver.run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
