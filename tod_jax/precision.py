"""The precision policy: how precisely each phase of a cycle runs its matmuls and convolutions.

JAX computes float32 matmuls and convolutions at the platform's fastest precision unless
told otherwise: TF32 (a 10-bit mantissa) on NVIDIA GPUs from Ampere on, one bfloat16 pass
on TPUs, float32 on CPUs. Each phase takes one of JAX's precision levels
(`jax.default_matmul_precision`), applied when its functions are traced:

  'default'  the platform's fastest (TF32 / one bfloat16 pass / float32 on CPU);
  'high'     TF32 on GPU, three bfloat16 passes on TPU, float32 on CPU;
  'highest'  float32 everywhere.

config.precision.train: the train step; .evaluate: test-set accuracy and IoU;
.score: every query score (COD, uncertainty measures, MC dropout, features and
core-set distances, LL4AL's predicted loss, VAAL's discriminator, BADGE).
COD is the difference of two nearly equal outputs, so scoring defaults to
'highest' (docs/scale.md, "Precision and determinism": measured overlap, accuracy and time).

config.compute_dtype: the dtype the train step computes in ('auto': bfloat16 on GPU
and TPU, float32 on CPU). Parameters, BatchNorm statistics, the loss and every score
stay float32: the scorer and the test-set evaluation run a float32 model.
"""

import functools
from typing import Any, Callable, Optional

import jax
import ml_collections

from tod_jax.errors import ConfigError

LEVELS = ('default', 'high', 'highest')
PHASES = ('train', 'evaluate', 'score')
DEFAULTS = {'train': 'default', 'evaluate': 'default', 'score': 'highest'}
COMPUTE_DTYPES = ('auto', 'float32', 'bfloat16')  # config.compute_dtype.
# Platforms whose matrix units run bfloat16 natively; a CPU gains nothing from it (REFERENCE).
BFLOAT16_PLATFORMS = ('gpu', 'cuda', 'rocm', 'tpu')


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless config.precision names a level for every phase."""
  for phase in PHASES:
    level = config.precision.get(phase)
    if level not in LEVELS:
      raise ConfigError(f'precision.{phase} {level!r} is not a precision level; set '
                        f'--config.precision.{phase} to one of {LEVELS}.')


def check_compute_dtype(name: str) -> None:
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f'compute_dtype {name!r} is not supported; set --config.compute_dtype to '
                      f'one of {COMPUTE_DTYPES}.')


def train_dtype(name: str, platform: str) -> str:
  """The dtype the train step computes in: `name`, with 'auto' resolved for `platform`
  (jax.Device.platform): 'bfloat16' on GPU and TPU, 'float32' elsewhere."""
  check_compute_dtype(name)
  if name != 'auto':
    return name
  return 'bfloat16' if platform in BFLOAT16_PLATFORMS else 'float32'


def traced_at(level: Optional[str], fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn`, tracing its matmuls and convolutions at `level` (None: the caller's precision).

  Wrap before `jax.jit`: the level is then part of the compiled function, whatever
  precision is in force where it is called.
  """
  if level is None:
    return fn

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision(level):
      return fn(*args, **kwargs)
  return wrapped
