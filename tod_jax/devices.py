"""Which devices a run uses: the CPU split into XLA devices, XLA:CPU's convolution kernels,
and multi-host initialisation.

All must run before any other JAX call (the command lines call driver.setup_devices first).
"""

import os
import socket
import time
from typing import Callable, Optional

import jax
import jaxlib.version
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from tod_jax import compilation_cache
from tod_jax.errors import ConfigError, UserError


# Models with at least this many parameters (ResNet-18) train and score faster with the CPU
# split into one XLA device per core and with Eigen's convolutions; the digits CNN does not
# (docs/scale.md: the measurements).
LARGE_MODEL_PARAMS = 1_000_000
MAX_AUTO_CPU_DEVICES = 8

# XLA flags tod_jax sets, each only for the jaxlib versions known to have it, [first, last)
# (major, minor): XLA aborts on a flag it does not know.
# XLA:CPU in jaxlib 0.10 runs convolutions through YNNPACK by default; its own Eigen kernels run
# ResNet-18's faster (docs/results.md, "Performance"). The flag takes YNNPACK's convolutions
# out (its matmuls and reductions stay).
EIGEN_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
EIGEN_CONV_JAXLIB = ((0, 10), (0, 12))
# XLA:GPU: deterministic kernels only and no autotuning, so a run resumed in a new process
# computes what the uninterrupted run did (docs/scale.md, "Precision and determinism"). No effect on
# CPU and TPU, which are deterministic already.
DETERMINISTIC_FLAG = '--xla_gpu_deterministic_ops=true'
DETERMINISTIC_JAXLIB = ((0, 4), (0, 13))
CPU_CONVOLUTIONS = ('auto', 'eigen', 'xla_default')


def check_cpu_convolutions(name: str) -> None:
  if name not in CPU_CONVOLUTIONS:
    raise ConfigError(f'Unknown cpu_convolutions {name!r}; set --config.cpu_convolutions to '
                      f'one of {list(CPU_CONVOLUTIONS)}.')


def _known(window: tuple[tuple[int, int], tuple[int, int]], jaxlib_version: str) -> bool:
  version = tuple(int(p) for p in jaxlib_version.split('.')[:2])
  return window[0] <= version < window[1]


def xla_flags(config: ml_collections.ConfigDict, flags: str, jaxlib_version: str,
              large_model: bool) -> str:
  """XLA_FLAGS for the config: `flags` plus EIGEN_CONV_FLAG for cpu_convolutions 'eigen',
  and for 'auto' with a large model (unless the flags already choose YNNPACK's fusions),
  plus DETERMINISTIC_FLAG for config.deterministic (unless the flags set it already);
  each only where this jaxlib has the flag."""
  check_cpu_convolutions(config.cpu_convolutions)
  eigen = config.cpu_convolutions == 'eigen' or (config.cpu_convolutions == 'auto' and large_model)
  if (eigen and 'xla_cpu_experimental_ynn_fusion_type' not in flags
      and _known(EIGEN_CONV_JAXLIB, jaxlib_version)):
    flags = f'{flags} {EIGEN_CONV_FLAG}'
  if config.deterministic and 'xla_gpu_deterministic_ops' not in flags:
    if _known(DETERMINISTIC_JAXLIB, jaxlib_version):
      flags = f'{flags} {DETERMINISTIC_FLAG}'
    else:
      logging.warning('jaxlib %s is not known to have %s: GPU runs may not be reproducible.',
                      jaxlib_version, DETERMINISTIC_FLAG)
  return flags.strip()


def is_large_model(parameter_count: Callable[[], int]) -> bool:
  """Whether the model that `parameter_count()` counts has at least LARGE_MODEL_PARAMS."""
  try:
    return parameter_count() >= LARGE_MODEL_PARAMS
  except Exception:  # A model that cannot take a 32x32x3 probe: small.  pylint: disable=broad-except
    return False


def auto_cpu_devices(config: ml_collections.ConfigDict, large_model: bool,
                     cores: Optional[int] = None) -> int:
  """The CPU device count of num_cpu_devices=-1: one per core (at most 8) for a large model,
  else 1; always a divisor of the batch sizes, so every batch splits evenly."""
  cores = min(cores or os.cpu_count() or 1, MAX_AUTO_CPU_DEVICES)
  if not large_model:
    return 1
  batches = [config.batch_size] + ([config.unlabeled_batch_size] if config.semi else [])
  return max(n for n in range(1, cores + 1) if all(b % n == 0 for b in batches))


def setup_devices(config: ml_collections.ConfigDict,
                  parameter_count: Callable[[], int]) -> None:
  """The devices a run uses; must run before any other JAX call (driver.setup_devices
  passes the model's `parameter_count`).

  config.num_cpu_devices splits the host CPU into that many XLA devices
  (jax_num_cpu_devices), so the mesh runs data parallel over the cores; -1 (the
  default) chooses with auto_cpu_devices, 0 keeps XLA's one multi-threaded device.
  It has no effect on GPU/TPU meshes. config.cpu_convolutions and config.deterministic:
  xla_flags. config.compilation_cache_dir: JAX's persistent compilation cache
  (tod_jax.compilation_cache). config.distributed.enabled: initialize_distributed.
  """
  directory = compilation_cache.enable(config.compilation_cache_dir)
  if directory:
    logging.info('Compiled programs are cached in %s (compilation_cache_dir=%r).', directory,
                 config.compilation_cache_dir)
  # Counting the model's parameters traces its init: only when an 'auto' setting needs it.
  large = ((config.num_cpu_devices < 0 or config.cpu_convolutions == 'auto')
           and is_large_model(parameter_count))
  flags = xla_flags(config, os.environ.get('XLA_FLAGS', ''), jaxlib.version.__version__, large)
  if flags != os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = flags  # Read when JAX starts its backends.
    logging.info('XLA_FLAGS=%s (cpu_convolutions=%r, deterministic=%r).', flags,
                 config.cpu_convolutions, config.deterministic)
  if config.num_cpu_devices < 0 and 'xla_force_host_platform_device_count' in os.environ.get(
      'XLA_FLAGS', ''):
    count = 0  # The user split the CPU with XLA_FLAGS already.
  else:
    count = (auto_cpu_devices(config, large) if config.num_cpu_devices < 0
             else config.num_cpu_devices)
  if count > 1 or config.num_cpu_devices > 0:
    jax.config.update('jax_num_cpu_devices', count)
    logging.info('CPU split into %d XLA device(s) (num_cpu_devices=%d).', count,
                 config.num_cpu_devices)
  if config.distributed.enabled:
    initialize_distributed(config)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize for a multi-host run (config.distributed.enabled).

  Empty / negative fields are left to JAX, which reads them from the environment
  on TPU pod slices, SLURM and Open MPI; on other GPU hosts set all three.
  Must run before any other JAX call.
  """
  kwargs = {}
  if config.distributed.coordinator_address:
    kwargs['coordinator_address'] = config.distributed.coordinator_address
  if config.distributed.num_processes > 0:
    kwargs['num_processes'] = config.distributed.num_processes
  if config.distributed.process_id >= 0:
    kwargs['process_id'] = config.distributed.process_id
  # CPU hosts talk through gloo (no-op on GPU/TPU, whose collectives are their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if config.distributed.coordinator_address and config.distributed.process_id > 0:
    # JAX aborts the process (a C++ fatal error) when the coordinator never answers: check
    # first, so an unreachable coordinator is one line within the timeout.
    _wait_for(config.distributed.coordinator_address, config.distributed.timeout, config.distributed.process_id)
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=config.distributed.timeout,
                               heartbeat_timeout_seconds=config.distributed.timeout)
  except Exception as e:  # JAX raises XlaRuntimeError / RuntimeError variants here.
    raise UserError(
        f'Process {config.distributed.process_id} could not join the cluster at '
        f'{config.distributed.coordinator_address or "(from the environment)"} within '
        f'{config.distributed.timeout} s ({type(e).__name__}: {str(e).splitlines()[0]}); start '
        'every process (python -m tod_jax.launch on one machine), check '
        '--config.distributed.coordinator_address, or raise --config.distributed.timeout.') from e
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
                        'starts all on one machine), check --config.distributed.coordinator_address, or '
                        'raise --config.distributed.timeout.') from e
      time.sleep(0.5)


def is_writer() -> bool:
  """Only process 0 writes config.json, metrics.jsonl, TensorBoard, label and query files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (multi-host); returns at once with one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
