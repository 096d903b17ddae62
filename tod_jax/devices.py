"""Which devices a run uses: the CPU split into XLA devices, and multi-host initialisation.

Both must run before any other JAX call (the command lines call setup_devices first).
"""

import socket
import time

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from tod_jax.errors import UserError


def setup_devices(config: ml_collections.ConfigDict) -> None:
  """The devices a command line run uses; must run before any other JAX call.

  config.num_cpu_devices > 0 splits the host CPU into that many XLA devices
  (jax_num_cpu_devices), so the mesh runs data parallel over the cores: on the
  2-core dev machine ResNet-18 inference is about 1.6x faster with 2 than with
  XLA's one multi-threaded CPU device (README, "Benchmarks"). It has no effect
  on GPU/TPU. config.distributed: initialize_distributed.
  """
  if config.num_cpu_devices > 0:
    jax.config.update('jax_num_cpu_devices', config.num_cpu_devices)
  if config.distributed:
    initialize_distributed(config)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize for a multi-host run (config.distributed).

  Empty / negative fields are left to JAX, which reads them from the environment
  on TPU pod slices, SLURM and Open MPI; on other GPU hosts set all three.
  Must run before any other JAX call.
  """
  kwargs = {}
  if config.coordinator_address:
    kwargs['coordinator_address'] = config.coordinator_address
  if config.num_processes > 0:
    kwargs['num_processes'] = config.num_processes
  if config.process_id >= 0:
    kwargs['process_id'] = config.process_id
  # CPU hosts talk through gloo (no-op on GPU/TPU, whose collectives are their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if config.coordinator_address and config.process_id > 0:
    # JAX aborts the process (a C++ fatal error) when the coordinator never answers: check
    # first, so an unreachable coordinator is one line within the timeout.
    _wait_for(config.coordinator_address, config.distributed_timeout, config.process_id)
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=config.distributed_timeout,
                               heartbeat_timeout_seconds=config.distributed_timeout)
  except Exception as e:  # JAX raises XlaRuntimeError / RuntimeError variants here.
    raise UserError(
        f'Process {config.process_id} could not join the cluster at '
        f'{config.coordinator_address or "(from the environment)"} within '
        f'{config.distributed_timeout} s ({type(e).__name__}: {str(e).splitlines()[0]}); start '
        'every process (python -m tod_jax.launch on one machine), check '
        '--config.coordinator_address, or raise --config.distributed_timeout.') from e
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _wait_for(address: str, timeout: float, process_id: int) -> None:
  """Returns once `address` (host:port) accepts a TCP connection; UserError after `timeout` s."""
  host, port = address.rsplit(':', 1)
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise UserError(f'Process {process_id} could not reach the coordinator at {address} '
                        f'within {timeout} s ({e}); start process 0 (python -m tod_jax.launch '
                        'starts all on one machine), check --config.coordinator_address, or '
                        'raise --config.distributed_timeout.') from e
      time.sleep(0.5)


def is_writer() -> bool:
  """Only process 0 writes config.json, metrics.jsonl, TensorBoard, label and query files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (multi-host); returns at once with one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
