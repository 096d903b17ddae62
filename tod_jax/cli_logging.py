"""Logging setup shared by the command lines (main, compare)."""

import logging as std_logging

from absl import logging


def setup_logging() -> None:
  """INFO logging, without Orbax's INFO lines (it logs every step of every save)."""
  logging.set_verbosity(logging.INFO)
  quiet_orbax = lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname
  logging.get_absl_handler().addFilter(quiet_orbax)
