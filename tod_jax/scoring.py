"""Per-sample model outputs and COD scores over the pool (Eq. 5), sharded."""

import functools
from typing import Optional, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tod_jax import input_pipeline, tod
from tod_jax.sharded_map import PoolMapper


def _logits(apply_fn, mean, std, variables, images):
  return apply_fn(variables, input_pipeline.normalize(images, mean, std), train=False)


def _outputs(apply_fn, mean, std, output, variables, images):
  return tod.model_output(_logits(apply_fn, mean, std, variables, images), output)


def _cod(apply_fn, mean, std, output, variables_pair, images):
  current, baseline = variables_pair
  return tod.output_discrepancy(_outputs(apply_fn, mean, std, output, current, images),
                                _outputs(apply_fn, mean, std, output, baseline, images))


class Scorer:
  """Sharded, chunked inference for one model: logits, outputs and COD over pool indices.

  Build once per run: each method compiles once per input shape. Both models
  run in inference mode (BatchNorm running statistics), as in the authors' code.
  """

  def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
               output: str, chunk_size: int, mesh: Optional[Mesh] = None):
    tod.model_output(jnp.zeros((1, 2)), output)  # Fail fast on an unknown output kind.
    mean, std = tuple(mean), tuple(std)
    self._logits = PoolMapper(functools.partial(_logits, model.apply, mean, std),
                              chunk_size, mesh)
    self._outputs = PoolMapper(functools.partial(_outputs, model.apply, mean, std, output),
                               chunk_size, self._logits.mesh)
    self._cod = PoolMapper(functools.partial(_cod, model.apply, mean, std, output),
                           chunk_size, self._logits.mesh)
    self.mesh = self._logits.mesh

  def logits(self, variables: chex.ArrayTree, images: np.ndarray,
             indices: Optional[np.ndarray] = None) -> np.ndarray:
    """[len(indices), classes] float32 logits."""
    return self._logits(variables, images, indices)

  def outputs(self, variables: chex.ArrayTree, images: np.ndarray,
              indices: Optional[np.ndarray] = None) -> np.ndarray:
    """The output f(x) that COD compares (config.score_output), [len(indices), ...] float32."""
    return self._outputs(variables, images, indices)

  def output_shape(self, variables: chex.ArrayTree, images: np.ndarray) -> tuple[int, ...]:
    """Per-sample shape of `outputs`, without running the model."""
    return tuple(self._outputs.output_struct(variables, images).shape[1:])

  def cod(self, variables: chex.ArrayTree, baseline_variables: chex.ArrayTree,
          images: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Eq. 5 per index, both models run: ||f(x; w_c) - f(x; w_{c-1})||. Returns [n] float32."""
    return self._cod((variables, baseline_variables), images, indices)

  def accuracy(self, variables: chex.ArrayTree, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `variables` on (images, labels)."""
    return float(np.mean(np.argmax(self.logits(variables, images), -1) == labels))
