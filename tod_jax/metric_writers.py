"""Where a run's scalars go: a small writer protocol, a no-op default, TensorBoard.

Training writes each epoch's mean metrics ('train/<name>', at the step count); the
driver writes each cycle's test metrics ('cycle/<name>', at the labeled count).
"""

import os
from typing import Mapping, Protocol


class MetricWriter(Protocol):
  """Receives scalars; `close` when the run ends."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    ...

  def close(self) -> None:
    ...


class NullWriter:
  """Writes nothing (tensorboard off, processes other than 0, the Python API by default)."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    del step, scalars

  def close(self) -> None:
    pass


class TensorBoardWriter:
  """TensorBoard event files in `logdir`, through tensorboardX (no TensorFlow needed)."""

  def __init__(self, logdir: str):
    import tensorboardX  # pylint: disable=import-outside-toplevel
    self._writer = tensorboardX.SummaryWriter(os.fspath(logdir))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
