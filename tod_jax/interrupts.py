"""Ctrl-C that is never lost: a KeyboardInterrupt a library swallows still stops the run.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives; code that
catches BaseException there (inside a dependency) can drop it, and the run would go on to
the end. `watch()` records every SIGINT as well, so the driver can stop at the next cycle
boundary when the exception itself never reached it.
"""

import contextlib
import signal
import threading
from typing import Iterator


class Watch:
  """Whether Ctrl-C was pressed since `watch()` began."""

  def __init__(self):
    self.pressed = False


@contextlib.contextmanager
def watch() -> Iterator[Watch]:
  """Records SIGINT while the block runs, then raises KeyboardInterrupt as Python's default
  handler does. Only in the main thread, and only over Python's default handler (a handler
  someone else installed, or SIGINT ignored as in compare's workers, is left alone)."""
  state = Watch()
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield state
    return

  def handler(signum, frame):
    state.pressed = True
    signal.default_int_handler(signum, frame)

  signal.signal(signal.SIGINT, handler)
  try:
    yield state
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)
