"""Errors a user can cause (a config, data or file problem), apart from bugs.

Each message names the problem and the fix in one sentence. The command lines
(tod_jax.cli) print a UserError as one line and exit non-zero; any other
exception is a bug and keeps its traceback.
"""

import contextlib
import errno
import os
from typing import Iterator


class UserError(Exception):
  """A problem with the user's config, data or files; the message says how to fix it."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work."""


class DataError(UserError, ValueError):
  """A dataset (arrays, folder or file) that cannot be used as given."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the command needs does not exist."""


class UnwritableError(UserError, OSError):
  """A directory the command must write to is read-only, full or not ours."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during a run; the message says which cycle is kept (still a KeyboardInterrupt)."""


# OSErrors that the user's directory causes, not tod_jax: no permission, a read-only
# file system, a full disk or quota.
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def writing(directory: str, fix: str = 'make it writable or pass another --workdir'
            ) -> Iterator[None]:
  """Turns a permission, read-only or disk-full OSError inside into an UnwritableError."""
  try:
    yield
  except OSError as e:
    if e.errno not in _UNWRITABLE:
      raise
    inside = isinstance(e.filename, str) and os.path.abspath(e.filename) != os.path.abspath(
        directory)
    where = f' ({e.filename})' if inside else ''
    raise UnwritableError(f'Cannot write to {directory}: {e.strerror}{where}; {fix}.') from e
