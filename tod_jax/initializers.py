"""Initial parameter values: flax's layer defaults or PyTorch's (config.param_init).

The authors' code, which produced the paper's numbers, initialises every layer with
PyTorch's defaults; the paper does not say. 'pytorch' re-draws what a Flax model's
`init` returned the way PyTorch's `reset_parameters` does for nn.Conv2d, nn.Linear
and nn.BatchNorm2d. The difference matters for COD's first cycle, which compares with
the initial network: PyTorch's defaults give a much flatter initial softmax (docs/method.md).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tod_jax.errors import ConfigError

SCHEMES = ('pytorch', 'flax')


def check(scheme: str) -> None:
  if scheme not in SCHEMES:
    raise ConfigError(f'Unknown param_init {scheme!r}; set --config.param_init to one of '
                      f'{", ".join(SCHEMES)}.')


def pytorch(params: dict, rng: chex.PRNGKey) -> dict:
  """`params` re-drawn as PyTorch initialises its layers.

  A layer with a 'kernel' (Conv, Dense): kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  fan_in = prod(kernel.shape[:-1]) (PyTorch's kaiming_uniform with a = sqrt(5)). A layer
  with a 'scale' and no kernel (BatchNorm, LayerNorm): scale 1, bias 0. Other leaves keep
  their values.
  """
  flat = traverse_util.flatten_dict(params)
  out, drawn = dict(flat), []  # drawn: (path, 1/sqrt(fan_in)) of the uniform leaves.
  for path in sorted(flat, key=str):
    layer, name, leaf = path[:-1], path[-1], flat[path]
    kernel = flat.get(layer + ('kernel',))
    if kernel is not None and name in ('kernel', 'bias'):
      drawn.append((path, 1.0 / math.sqrt(math.prod(kernel.shape[:-1]))))
    elif kernel is None and layer + ('scale',) in flat and name in ('scale', 'bias'):
      out[path] = (jnp.ones_like if name == 'scale' else jnp.zeros_like)(leaf)
  sizes = [flat[path].size for path, _ in drawn]
  # One draw for every leaf: one small compilation whatever the model.
  u = np.asarray(jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0))
  for (path, bound), start in zip(drawn, np.cumsum([0] + sizes[:-1])):
    leaf = flat[path]
    out[path] = jnp.asarray(u[start:start + leaf.size].reshape(leaf.shape) * bound, leaf.dtype)
  return traverse_util.unflatten_dict(out)


def apply(scheme: str, params: dict, rng: chex.PRNGKey) -> dict:
  """`params` under `scheme`: 'flax' returns them unchanged, 'pytorch' re-draws them."""
  check(scheme)
  return params if scheme == 'flax' else pytorch(params, rng)
