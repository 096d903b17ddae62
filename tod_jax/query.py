"""Command line: train the current cycle if its labels have arrived, and write its query.

  python -m tod_jax.query --config=configs/image_folder.py --config.data_dir=IMAGES --workdir=DIR
  python -m tod_jax.query --workdir=DIR   # Later rounds: the run's saved config.

Writes DIR/queries/cycle_NNN.csv (rank, sample_id, path, score) for the person who
labels; `python -m tod_jax.label` imports the answers. Run again after labeling.
"""

import os

import ml_collections
from absl import flags

from tod_jax import cli, driver, label_sources, rundir
from tod_jax.errors import ConfigError, UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined when it runs, so command modules import together."""
  flags.DEFINE_string('workdir', None, 'The run directory (checkpoints, labels.json, queries/).')
  cli.define_config_flag('A configs/*.py file; only needed to start a run (later calls use '
                         'WORKDIR/config.json).')
  flags.DEFINE_integer('num_cycles', 0, 'If > 0, replaces config.num_cycles (to go on after '
                       'the planned cycles).')
  cli.define_fresh_start_flag()
  flags.mark_flags_as_required(['workdir'])


def load_config(workdir: str, config: ml_collections.ConfigDict | None
                ) -> ml_collections.ConfigDict:
  """`config` if given, else the config the run in `workdir` was started with."""
  if config is not None:
    return config
  if not os.path.exists(os.path.join(workdir, rundir.CONFIG)):
    raise UserError(f'{workdir} holds no run yet; start it with '
                    '--config=configs/image_folder.py --config.data_dir=IMAGES.')
  return rundir.saved_config(workdir)


def query(config: ml_collections.ConfigDict, workdir: str, fresh_start: bool = False) -> str:
  """Runs the driver (at most one new cycle) and returns a summary for the person.

  `fresh_start`: as in driver.run.
  """
  if config.distributed.enabled:
    raise ConfigError('tod_jax.query runs on one host: a person labels between its rounds, so '
                      'there is no long run to spread over hosts; drop --config.distributed.')
  if config.labels != 'ledger':
    raise ConfigError("tod_jax.query needs --config.labels=ledger (a person labels); with the "
                      "simulated oracle run `python -m tod_jax.main`.")
  done_before = len(rundir.read_metrics(workdir))  # One line per completed cycle.
  records = driver.run(config, workdir, fresh_start=fresh_start)
  data = label_sources.read_ledger(workdir)
  cycle, queried = label_sources.current_query(data)
  path = label_sources.query_csv_path(workdir, cycle)
  unlabeled = [s for s in queried if s not in data['labels']]
  accuracy = records[-1]['test_accuracy']
  if len(records) == done_before:
    status = (f'All {config.num_cycles} cycles are done (pass --num_cycles=N to go on)'
              if cycle == config.num_cycles else
              f'No labels have arrived for the query of cycle {cycle}: nothing to train')
  else:
    status = f'Cycle {cycle}: trained on {records[-1]["num_labeled"]} labeled samples' + (
        '' if accuracy is None else f', test accuracy {accuracy:.4f}')
  return '\n'.join([
      status + '.',
      f'Query: {path} ({len(queried)} samples, {len(unlabeled)} still without a label).',
      f'Label them in a CSV with columns sample_id,label (classes: {", ".join(data["classes"])}),'
      f' then run: python -m tod_jax.label --workdir={workdir} --labels=LABELS.csv',
      f'and then again: python -m tod_jax.query --workdir={workdir}'])


def main(argv):
  del argv  # cli.run refuses arguments besides the flags.
  config = load_config(FLAGS.workdir, FLAGS.config)
  driver.setup_devices(config)
  if FLAGS.num_cycles > 0:
    config.num_cycles = FLAGS.num_cycles  # A resumable change (rundir.RESUMABLE_CHANGES).
  print(query(config, FLAGS.workdir, FLAGS.fresh_start))


if __name__ == '__main__':
  cli.run(main, define_flags)
