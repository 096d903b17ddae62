"""What every command line shares: quiet logging and one-line user errors.

`cli.run(main)` replaces `absl.app.run(main)`: a tod_jax.errors.UserError (a config,
data or file problem) ends the command with one line `<command>: error: ...` and
exit code 1; any other exception is a bug and keeps its traceback.
"""

import logging as std_logging
import os
import sys
from typing import Callable

from absl import app, logging

from tod_jax.errors import UserError


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


def run(main: Callable[[list[str]], None]) -> None:
  """absl.app.run(main), with user errors as one line on stderr and exit code 1."""
  name = os.path.basename(sys.argv[0]).removesuffix('.py')
  command = f'tod_jax.{name}' if name not in ('-c', '') else 'tod_jax'

  def guarded(argv):
    setup_logging()
    try:
      main(argv)
    except UserError as e:
      print(f'{command}: error: {" ".join(str(e).split())}', file=sys.stderr)
      sys.exit(1)
  app.run(guarded)
