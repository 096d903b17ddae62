"""A `jax.profiler` trace of one training epoch (config.profile_dir), for TensorBoard's profile
plugin, Perfetto or XProf: where a step's time goes on the device and the host."""

import contextlib
from typing import ContextManager

import jax

PROFILED_CYCLE = 1  # Cycle 1's second epoch: compiled already, and early in a run.


def profiled_epoch(num_epochs: int) -> int:
  """The 0-based epoch traced: the second, or the only one."""
  return min(1, num_epochs - 1)


def epoch_trace(profile_dir: str, cycle: int, epoch: int, num_epochs: int) -> ContextManager:
  """jax.profiler.trace(profile_dir) around cycle 1's profiled epoch; elsewhere (or with
  profile_dir '') a context that does nothing. The trace lands in
  profile_dir/plugins/profile/<time>/ (*.xplane.pb)."""
  if profile_dir and cycle == PROFILED_CYCLE and epoch == profiled_epoch(num_epochs):
    return jax.profiler.trace(profile_dir)
  return contextlib.nullcontext()
