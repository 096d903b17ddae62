"""Files a run writes besides its checkpoints: atomic text files, index lists as JSON."""

import os
import tempfile

import numpy as np


def write_atomic(path: str, text: str) -> None:
  """Writes a temporary file beside `path`, then renames it: readers see old or new, whole.

  A file that already holds `text` is left as it is (a finished run on a read-only mount).
  """
  if os.path.isfile(path):
    with open(path, newline='') as f:
      if f.read() == text:
        return
  tmp = f'{path}.tmp'
  with open(tmp, 'w', newline='') as f:
    f.write(text)
  os.replace(tmp, path)


def check_writable(path: str) -> None:
  """Raises the OSError that writing into directory `path` (or the directory it would be
  made in) would raise, before the work that would write; leaves nothing behind."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise OSError(e.errno, e.strerror, path) from e  # The directory, not the probe's name.


def indices_to_json(indices: np.ndarray) -> list[int]:
  return [int(i) for i in np.asarray(indices)]
