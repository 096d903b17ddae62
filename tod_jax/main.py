"""Command line: `python -m tod_jax.main --config=configs/digits.py --workdir=DIR`.

Config fields are overridden with `--config.key=value`. For several hosts, run the
same command on every host with `--config.distributed.enabled=True` (docs/scale.md).
"""

from absl import flags

from tod_jax import cli, driver

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and '
                      'TensorBoard.')
  cli.define_config_flag()
  cli.define_fresh_start_flag()
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  driver.setup_devices(FLAGS.config)  # Before any other JAX call.
  driver.run(FLAGS.config, FLAGS.workdir, fresh_start=FLAGS.fresh_start)


if __name__ == '__main__':
  cli.run(main, define_flags)
