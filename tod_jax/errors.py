"""Errors a user can cause (a config, data or file problem), apart from bugs.

Each message names the problem and the fix in one sentence. The command lines
(tod_jax.cli) print a UserError as one line and exit non-zero; any other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's config, data or files; the message says how to fix it."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work."""


class DataError(UserError, ValueError):
  """A dataset (arrays, folder or file) that cannot be used as given."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the command needs does not exist."""
