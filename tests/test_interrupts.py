"""interrupts.watch: every Ctrl-C is recorded, raised as Python raises it, and the handler restored."""

import os
import signal
import threading

import pytest

from tod_jax import interrupts


def test_ctrl_c_raises_and_is_recorded():
  with pytest.raises(KeyboardInterrupt):
    with interrupts.watch() as ctrl_c:
      assert not ctrl_c.pressed
      os.kill(os.getpid(), signal.SIGINT)
  assert ctrl_c.pressed
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_swallowed_ctrl_c_is_still_recorded():
  with interrupts.watch() as ctrl_c:
    try:
      os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # pylint: disable=broad-except
      pass
  assert ctrl_c.pressed


def test_another_handler_and_other_threads_are_left_alone():
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with interrupts.watch() as ctrl_c:
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert not ctrl_c.pressed and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)
  seen = []

  def in_thread():
    with interrupts.watch() as watch:  # signal.signal would raise outside the main thread.
      seen.append(watch.pressed)

  thread = threading.Thread(target=in_thread)
  thread.start()
  thread.join()
  assert seen == [False]
