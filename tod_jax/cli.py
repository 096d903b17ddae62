"""What every command line shares: flags defined when run, quiet logging, one-line mistakes.

Each command module has `define_flags()` and `main(argv)` and ends with
`if __name__ == '__main__': cli.run(main, define_flags)`; nothing is defined at
import, so the command modules import together. `run` replaces
`absl.app.run(main)`: a tod_jax.errors.UserError (a config, data or file problem)
or a command-line mistake (an unknown or missing flag, an unknown config field, a
config file that does not load) ends the command with one line on stderr and exit
code 1, having written nothing; so does Ctrl-C, with the cycle kept and the command
that resumes; --help prints the usage and exits 0; any other exception is a bug and
keeps its traceback.
"""

import logging as std_logging
import os
import re
import shlex
import sys
from typing import Callable, NoReturn, Optional, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from tod_jax import configs
from tod_jax.errors import UserError

FLAGS = flags.FLAGS
CONFIG = 'config'  # The config-file flag of every command that takes one.
# The shipped configs/*.py of a source checkout (README commands name them relative to it).
SHIPPED_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs')


def _quiet(record: std_logging.LogRecord) -> bool:
  """Drops Orbax's INFO lines (one per save step) and JAX's probe for a TPU on other hosts."""
  if record.levelno >= std_logging.WARNING:
    return True
  if '/orbax/' in record.pathname:
    return False
  return not (record.pathname.endswith('xla_bridge.py')
              and 'Unable to initialize backend' in record.getMessage())


def setup_logging() -> None:
  """INFO logging without Orbax's per-step lines and JAX's TPU probe."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet)


def define_config_flag(help_string: str = 'A configs/*.py file.') -> None:
  """`--config=FILE`, its fields overridden with `--config.<field>=value` (ml_collections)."""
  config_flags.DEFINE_config_file(CONFIG, None, help_string, lock_config=True)


def define_fresh_start_flag() -> None:
  """`--fresh_start` of the commands that run (tod_jax.driver.run's fresh_start)."""
  flags.DEFINE_bool('fresh_start', False, 'Start over in a --workdir that holds results '
                    '(metrics.jsonl) but no checkpoints, replacing its metrics.jsonl; a '
                    'workdir with checkpoints resumes as always.')


def command_name() -> str:
  """`tod_jax.<module>` of the running command."""
  name = os.path.basename(sys.argv[0]).removesuffix('.py')
  return f'tod_jax.{name}' if name not in ('-c', '') else 'tod_jax'


def rerun_command() -> str:
  """The command line that runs this command again, as a user would type it."""
  return shlex.join(['python', '-m', command_name(), *sys.argv[1:]])


def fail(message: str) -> NoReturn:
  """Ends the command with `<command>: error: <message>` on one line and exit code 1."""
  print(f'{command_name()}: error: {" ".join(str(message).split())}', file=sys.stderr)
  sys.exit(1)


def _flag_values(argv: Sequence[str], name: str) -> list[str]:
  """The values given to `--name` in argv (`--name=v`, `--name v`, one dash too)."""
  values = []
  for i, arg in enumerate(argv):
    match = re.fullmatch(rf'--?{re.escape(name)}(=(.*))?', arg)
    if match and match.group(1):
      values.append(match.group(2))
    elif match and i + 1 < len(argv):
      values.append(argv[i + 1])
  return values


def _check_config_file(argv: Sequence[str]) -> None:
  """One line for a --config file that does not exist, with the absolute path tried."""
  for value in _flag_values(argv, CONFIG):
    path = value.split(':', 1)[0]  # ml_collections passes `FILE:ARG` on to get_config(ARG).
    if os.path.isfile(path):
      continue
    shipped = os.path.join(SHIPPED_CONFIGS, os.path.basename(path))
    hint = f', e.g. --{CONFIG}={shipped}' if os.path.isfile(shipped) else ''
    fail(f'Config file {path} not found (tried {os.path.abspath(path)}); run from the '
         f'tod_jax repository root or pass an absolute path{hint}.')


def _unknown_overrides(argv: Sequence[str]) -> list[str]:
  """Fields of `--config.<field>=...` (or `--config.<group>.<field>=...`) overrides that
  tod_jax does not read, or reads under a new name (a group's old flag included)."""
  pattern = re.compile(rf'--?(?:no)?{CONFIG}\.([^=\s]+)')
  names = {m.group(1) for m in map(pattern.match, argv) if m}
  known = configs.known_fields()
  return sorted(n for n in names if n not in known or n in configs.RENAMED_FIELDS)


def _clause(error: BaseException) -> str:
  """An error's message on one line, without its final full stop (a clause to go on)."""
  return ' '.join(str(error).split()).rstrip('.')


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with --help exiting 0 and every mistake as one line."""
  if CONFIG in FLAGS:
    _check_config_file(argv)
    unknown = _unknown_overrides(argv)
    if unknown:
      fail(configs.unknown_fields_message(unknown))
  try:
    args = FLAGS(argv)
  except flags.Error as e:
    fail(f'{_clause(e)}; see --help.')
  except SystemExit:  # absl's help flags print the usage, then exit with code 1.
    if any(re.fullmatch(r'--?(help|helpshort|helpfull|helpxml|\?)(=.*)?', a) for a in argv[1:]):
      sys.exit(0)
    raise
  except OSError as e:  # ml_collections: a config file that exists but does not load.
    fail(f'{_clause(e)}; check the --{CONFIG} file.')
  config = FLAGS[CONFIG].value if CONFIG in FLAGS else None
  if config is not None and not isinstance(config, ml_collections.ConfigDict):
    try:
      getattr(config, 'lock')  # Raises the error that kept the file from loading.
    except OSError as e:
      fail(f'--{CONFIG}: {_clause(e)}; check the file.')
  if config is not None:  # A field of the file itself that tod_jax would ignore.
    try:
      configs.check_fields(config)
    except UserError as e:
      fail(str(e))
  return args


def run(main: Callable[[list[str]], None], define_flags: Optional[Callable[[], None]] = None,
        positional: bool = False) -> None:
  """Defines the command's flags, then absl.app.run(main) with mistakes as one line.

  `positional`: the command takes arguments besides its flags (else they are a mistake).
  """
  if define_flags is not None:
    define_flags()

  def guarded(argv):
    setup_logging()
    try:
      if len(argv) > 1 and not positional:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
      main(argv)
    except UserError as e:
      fail(str(e))
    except app.UsageError as e:
      fail(f'{_clause(e)}; see --help.')
    except KeyboardInterrupt as e:
      kept = f'{_clause(e)}; resume with: ' if str(e) else 'run it again with: '
      print(f'{command_name()}: interrupted: {kept}{rerun_command()}', file=sys.stderr)
      sys.exit(1)
  app.run(guarded, flags_parser=parse_flags)
