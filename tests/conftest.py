"""Shared test setup: the repo root on sys.path (for `configs`), tiny run configs."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def make_tiny_config():
  """The digits config cut down to seconds: 2 cycles, 2 epochs."""
  from configs import digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config()
  config.num_cycles = 2
  config.num_epochs = 2
  config.batch_size = 32
  config.unlabeled_batch_size = 16
  config.progress_bar = False
  config.tensorboard = False
  return config


@pytest.fixture
def tiny_config():
  return make_tiny_config()
