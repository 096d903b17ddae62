"""What the benchmark scripts share: machine fields, JSON lines, timing, memory, data, FLOPs.

Every script prints one JSON line per measurement through `emit`, which adds
the `device` (jax's first device: kind, platform, count) and the `host`
(processor, CPU count), so a line read alone says where it was measured.
"""

import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags
from tod_jax.dataset import Dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
  if _path not in sys.path:
    sys.path.insert(0, _path)



CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
TORCH_VERSION = 'torch==2.13.0'  # The `bench` extra in setup.cfg.


def machine() -> dict:
  """{'device': {kind, platform, count}, 'host': {processor, cpu_count}}."""
  device = jax.devices()[0]
  return {'device': {'kind': str(device.device_kind), 'platform': device.platform,
                     'count': jax.device_count()},
          'host': {'processor': platform.processor() or platform.machine(),
                   'cpu_count': os.cpu_count()}}


def emit(record: dict) -> dict:
  """Prints `record` plus the machine fields as one JSON line; returns what was printed."""
  line = {**record, **machine()}
  print(json.dumps(line), flush=True)
  return line


def config_flag_values(default_config: str,
                       argv: Optional[list] = None) -> flags.FlagValues:
  """Fresh flags with `--config` (a configs/*.py file, overridable with --config.<field>=...).

  Fresh FlagValues rather than absl's global FLAGS, so a script's main(argv) can run
  more than once in one process (the tests call it directly). Parse with fv([name, *argv]).
  """
  fv = flags.FlagValues()
  # config_flags defines a --config.<field> flag for each one in the command line it is
  # given (sys.argv unless `argv`, the arguments after the program name, is passed).
  config_flags.DEFINE_config_file(
      'config', os.path.join(ROOT, 'configs', default_config),
      'Run config; override fields with --config.<field>=value.', flag_values=fv,
      lock_config=False, sys_argv=None if argv is None else [sys.argv[0], *argv])
  return fv


def parse_run_config(fv: flags.FlagValues, name: str,
                     argv: Optional[list] = None) -> ml_collections.ConfigDict:
  """Parses `argv` (sys.argv[1:] if None) into `fv` and returns its config, quiet: no
  progress bar, no TensorBoard."""
  fv([name] + list(sys.argv[1:] if argv is None else argv))
  config = fv.config
  config.progress_bar, config.tensorboard = False, False
  return config


def subprocess_env(**changes: str) -> dict:
  """This process's environment plus `changes`, the repo root added to PYTHONPATH (never
  replacing it: an environment may bring its packages through PYTHONPATH)."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH', '')) if p)
  return dict(os.environ, PYTHONPATH=path, **changes)


def skipped(impl: str, reason: str) -> dict:
  """The line for an implementation that did not run (e.g. torch not installed)."""
  return emit({'impl': impl, 'skipped': reason})


def best_of(fn: Callable[[], Any], repeats: int) -> float:
  """Fastest wall time of `repeats` calls of `fn` (which must block until done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """(fn(), seconds), blocking on any jax arrays in the result."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


def peak_memory() -> dict:
  """Host peak RSS (bytes) and, where the backend reports it, the device's peak bytes."""
  record = {'host_peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  stats = jax.devices()[0].memory_stats()  # None on CPU.
  if stats and 'peak_bytes_in_use' in stats:
    record['device_peak_bytes'] = int(stats['peak_bytes_in_use'])
  return record


def import_torch():
  """torch, or ImportError with the install command."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f'{e}; pip install {TORCH_VERSION} (pip install -e ".[bench]")') from e
  return torch


def torch_device(torch) -> str:
  """'cuda' when jax runs on a GPU and torch has CUDA, else 'cpu': both sides on like hardware."""
  return 'cuda' if jax.devices()[0].platform == 'gpu' and torch.cuda.is_available() else 'cpu'


def torch_impl(torch, suffix: str = '') -> str:
  """The `impl` name of a PyTorch baseline: version, '_cuda' on a GPU, then `suffix`."""
  return f"torch_{torch.__version__}{'_cuda' if torch_device(torch) == 'cuda' else ''}{suffix}"


def synthetic_cifar(num_train: int, num_test: int = 0, seed: int = 0
                    ) -> Dataset:
  """Random uint8 32x32x3 images with 10 random labels and CIFAR-10's mean/std (no download)."""
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = lambda n: rng.integers(0, 10, n).astype(np.int32)
  return Dataset('synthetic_cifar10', images(num_train), labels(num_train),
                                images(num_test), labels(num_test), 10, CIFAR_MEAN, CIFAR_STD)


def forward_flops(model, variables: Any, image_shape: tuple[int, ...], batch: int = 8) -> float:
  """FLOPs of one inference forward pass per image, from XLA's cost analysis.

  `variables` may be arrays or their shapes (jax.eval_shape): nothing runs.
  """
  apply = lambda v, x: model.apply(v, x, train=False)
  images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  cost = jax.jit(apply).lower(variables, images).compile()
  cost = cost.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per program.
  return float(cost['flops']) / batch


def flop_floor(flops: float, seconds: float, peak_tflops: Optional[float]) -> dict:
  """{'flops'} and, given the device's peak, the floor time and how far above it we are."""
  record = {'flops': flops}
  if peak_tflops:
    floor = flops / (peak_tflops * 1e12)
    record.update(peak_tflops=peak_tflops, flop_floor_seconds=floor,
                  seconds_over_flop_floor=seconds / floor)
  return record


def ratio(numerator: dict, denominator: dict, field: str) -> dict:
  """{'numerator', 'denominator', 'field', 'ratio'}: the quotient of two printed lines' `field`."""
  return {'numerator': numerator['impl'], 'denominator': denominator['impl'], 'field': field,
          'ratio': numerator[field] / denominator[field]}
