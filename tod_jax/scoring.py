"""Per-sample model outputs, COD scores (Eq. 5) and confusion matrices over the pool, sharded.

Works unchanged for dense outputs: segmentation logits are `[N, H, W, classes]`
and COD is one score per image (Eq. 5 over all its pixels and classes).
Uncertainty measures run per pixel and are averaged over the image's pixels
inside the mapped function, so full-resolution outputs never leave the device.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tod_jax import (augment, badge, caches, loss_prediction, metrics, precision, tod,
                     uncertainty)
from tod_jax.sharded_map import PoolMapper, make_mesh


def _logits(apply_fn, mean, std, variables, images):
  return apply_fn(variables, augment.normalize(images, mean, std), train=False)


def _outputs(apply_fn, mean, std, output, variables, images):
  return tod.model_output(_logits(apply_fn, mean, std, variables, images), output)


def _uncertainty(apply_fn, mean, std, measure, variables, images):
  probs = jax.nn.softmax(_logits(apply_fn, mean, std, variables, images), axis=-1)
  return uncertainty.image_mean(measure(probs))  # Segmentation: per pixel, then the image mean.


def _logits_and_intermediates(apply_fn, mean, std, variables, images):
  logits, state = apply_fn(variables, augment.normalize(images, mean, std), train=False,
                           mutable=['intermediates'])
  # float32 even under bfloat16 compute: distances (core-set, BADGE) need the precision.
  return logits, jax.tree.map(lambda a: a.astype(jnp.float32), state['intermediates'])


def _intermediates(apply_fn, mean, std, variables, images):
  return _logits_and_intermediates(apply_fn, mean, std, variables, images)[1]


def _features(apply_fn, mean, std, variables, images):
  return _intermediates(apply_fn, mean, std, variables, images)['features'][0]


def _gradient_embedding_factors(apply_fn, mean, std, variables, images):
  logits, intermediates = _logits_and_intermediates(apply_fn, mean, std, variables, images)
  return badge.gradient_embedding_factors(logits, intermediates['features'][0])


def _predicted_loss(apply_fn, mean, std, variables_and_head, images):
  variables, head_params = variables_and_head
  return loss_prediction.predict(head_params,
                                 _intermediates(apply_fn, mean, std, variables, images))


def _mc_probabilities(apply_fn, mean, std, num_samples, variables_and_rng, images):
  variables, rng = variables_and_rng
  x = augment.normalize(images, mean, std)
  one_pass = lambda key: jax.nn.softmax(
      apply_fn(variables, x, train=False, dropout=True, rngs={'dropout': key}), axis=-1)
  # [T, B, (H, W,) K] -> [B, (H, W,) T, K]: measures over [..., T, K] then work per pixel.
  return jnp.moveaxis(jax.vmap(one_pass)(jax.random.split(rng, num_samples)), 0, -2)


def _mc_uncertainty(apply_fn, mean, std, num_samples, measure, variables_and_rng, images):
  return uncertainty.image_mean(
      measure(_mc_probabilities(apply_fn, mean, std, num_samples, variables_and_rng, images)))


def _cod(apply_fn, mean, std, output, variables_pair, images):
  current, baseline = variables_pair
  return tod.output_discrepancy(_outputs(apply_fn, mean, std, output, current, images),
                                _outputs(apply_fn, mean, std, output, baseline, images))


def _predictions(apply_fn, mean, std, variables_tuple, images):
  """[chunk, len(variables_tuple)] argmax predictions of each model; the images normalised once."""
  x = augment.normalize(images, mean, std)
  return jnp.stack([jnp.argmax(apply_fn(v, x, train=False), -1) for v in variables_tuple], -1)


def _confusion(apply_fn, mean, std, num_classes, ignore_label, variables, batch):
  images, labels = batch
  predictions = jnp.argmax(_logits(apply_fn, mean, std, variables, images), -1)
  per_sample = functools.partial(metrics.confusion_matrix, num_classes=num_classes,
                                 ignore_label=ignore_label)
  return jax.vmap(per_sample)(predictions, labels)


class Scorer:
  """Sharded, chunked inference for one model: logits, outputs and COD over pool indices.

  Build once per run: each method compiles once per input shape. Both models
  run in inference mode (BatchNorm running statistics), as in the authors' code.
  Query scores (every method but `accuracy` and `confusion`) trace their matmuls and
  convolutions at `score_precision`, the test-set metrics at `evaluate_precision`
  (tod_jax.precision).
  """

  def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
               output: str, chunk_size: int, mesh: Optional[Mesh] = None, *,
               score_precision: str = precision.DEFAULTS['score'],
               evaluate_precision: str = precision.DEFAULTS['evaluate']):
    tod.model_output(jnp.zeros((1, 2)), output)  # Fail fast on an unknown output kind.
    mean, std = tuple(mean), tuple(std)
    self.mesh = mesh if mesh is not None else make_mesh()
    self.score_precision, self.evaluate_precision = score_precision, evaluate_precision
    mapper = lambda fn, *args: PoolMapper(functools.partial(fn, model.apply, mean, std, *args),
                                          chunk_size, self.mesh, score_precision)
    # Logits in chunks of a given size: a test set smaller than a chunk is one chunk of its own
    # size, not padded to chunk_size for every evaluation (200 images: 5x less work at 1,024).
    self._logits_in = functools.lru_cache(maxsize=None)(
        lambda size, level: PoolMapper(functools.partial(_logits, model.apply, mean, std), size,
                                       self.mesh, level))
    self._logits = self._logits_in(chunk_size, score_precision)
    self._outputs = mapper(_outputs, output)
    self._cod = mapper(_cod, output)
    self._features = mapper(_features)
    self._gradient_embedding_factors = mapper(_gradient_embedding_factors)
    self._predicted_loss = mapper(_predicted_loss)
    # Built on first use, one per static argument.
    self._mc = functools.lru_cache(maxsize=None)(functools.partial(mapper, _mc_probabilities))
    self._uncertainty = functools.lru_cache(maxsize=None)(functools.partial(mapper, _uncertainty))
    self._mc_uncertainty = functools.lru_cache(maxsize=None)(
        functools.partial(mapper, _mc_uncertainty))
    # Test-set predictions of one or several models in one pass, in chunks of a given size.
    self._predictions_in = functools.lru_cache(maxsize=None)(
        lambda size: PoolMapper(functools.partial(_predictions, model.apply, mean, std), size,
                                self.mesh, evaluate_precision))
    self._confusion = functools.lru_cache(maxsize=None)(
        lambda *args: PoolMapper(functools.partial(_confusion, model.apply, mean, std, *args),
                                 chunk_size, self.mesh, evaluate_precision))
    self._discrepancy = PoolMapper(lambda _, pair: tod.output_discrepancy(*pair), chunk_size,
                                   self.mesh, score_precision)
    self._output_shapes = {}
    self.chunk_size = self._logits.chunk_size  # Pool samples per call (a device multiple).

  def logits(self, variables: chex.ArrayTree, images: np.ndarray,
             indices: Optional[np.ndarray] = None) -> np.ndarray:
    """[len(indices), classes] (segmentation: [len(indices), H, W, classes]) float32 logits."""
    return self._logits(variables, images, indices)

  def outputs(self, variables: chex.ArrayTree, images: np.ndarray,
              indices: Optional[np.ndarray] = None) -> np.ndarray:
    """The output f(x) that COD compares (config.score_output), [len(indices), ...] float32."""
    return self._outputs(variables, images, indices)

  def output_shape(self, variables: chex.ArrayTree, images: np.ndarray) -> tuple[int, ...]:
    """Per-sample shape of `outputs`, without running the model (traced once per shape)."""
    key = (images.shape[1:], images.dtype.str)
    if key not in self._output_shapes:
      self._output_shapes[key] = tuple(
          self._outputs.output_struct(variables, images).shape[1:])
    return self._output_shapes[key]

  def discrepancy(self, outputs: np.ndarray, baseline_outputs: np.ndarray) -> np.ndarray:
    """Eq. 5 between two stacks of outputs `[n, ...]` (e.g. kept ones): [n] float32."""
    return self._discrepancy(None, (outputs, baseline_outputs))

  def cod(self, variables: chex.ArrayTree, baseline_variables: chex.ArrayTree,
          images: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Eq. 5 per index, both models run: ||f(x; w_c) - f(x; w_{c-1})||. Returns [n] float32."""
    return self._cod((variables, baseline_variables), images, indices)

  def uncertainty(self, variables: chex.ArrayTree, measure: Callable[[chex.Array], chex.Array],
                  images: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """`measure`(softmax(logits)) per index (tod_jax.uncertainty), on the devices: [n] float32.

    Segmentation: `measure` per pixel, then the mean over all the image's pixels
    (`uncertainty.image_mean`; pool labels are unknown, so no pixel is ignored).
    """
    return self._uncertainty(measure)(variables, images, indices)

  def features(self, variables: chex.ArrayTree, images: np.ndarray,
               indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Penultimate features (sown as 'features'), [len(indices), D] float32."""
    return self._features(variables, images, indices)

  def gradient_embedding_factors(self, variables: chex.ArrayTree, images: np.ndarray,
                                 indices: Optional[np.ndarray] = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's factors (a = p - onehot(argmax p) [n, K], h = features [n, D]), float32.

    Sample i's gradient embedding is a_i ⊗ h_i (tod_jax/badge.py). Classification only.
    """
    return self._gradient_embedding_factors(variables, images, indices)

  def predicted_loss(self, variables: chex.ArrayTree, loss_head_params: Any,
                     images: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """LL4AL's predicted loss from the model's stage outputs, [len(indices)] float32."""
    return self._predicted_loss((variables, loss_head_params), images, indices)

  def mc_probabilities(self, variables: chex.ArrayTree, rng: chex.PRNGKey, num_samples: int,
                       images: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Softmax of `num_samples` passes with dropout on and BatchNorm in inference mode.

    Returns [len(indices), num_samples, classes] (segmentation: [len(indices), H, W,
    num_samples, classes]: the passes next to the classes, per pixel; for small pools
    only, as it brings every pixel to the host). Every chunk reuses `rng`, so a
    sample's dropout masks depend on its position in its chunk; the passes of
    one sample are independent, which is what MC dropout needs.
    """
    return self._mc(num_samples)((variables, rng), images, indices)

  def mc_uncertainty(self, variables: chex.ArrayTree, rng: chex.PRNGKey, num_samples: int,
                     measure: Callable[[chex.Array], chex.Array], images: np.ndarray,
                     indices: Optional[np.ndarray] = None) -> np.ndarray:
    """`measure`(mc_probabilities [n, (H, W,) T, K]) per index, on the devices: [n] float32.

    Segmentation: `measure` per pixel, then the mean over all the image's pixels.
    The T passes of a chunk are held at once: T x chunk x H x W x K floats.
    """
    return self._mc_uncertainty(num_samples, measure)((variables, rng), images, indices)

  def accuracy(self, variables: chex.ArrayTree, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `variables` on (images, labels), in chunks of at most len(images)."""
    return self.accuracies((variables,), images, labels)[0]

  def accuracies(self, variables: Sequence[chex.ArrayTree], images: np.ndarray,
                 labels: np.ndarray) -> list[float]:
    """Top-1 accuracy of each of several models (e.g. w_c and its EMA) on (images, labels), in
    one pass over the images in chunks of at most len(images); only predictions leave the
    devices. Compiles once per number of models and chunk size."""
    predictions = self._predictions_in(min(self.chunk_size, len(images)))(
        tuple(variables), images, None)
    return [float(v) for v in np.mean(predictions == np.asarray(labels)[:, None], 0)]

  def confusion(self, variables: chex.ArrayTree, images: np.ndarray, labels: np.ndarray,
                num_classes: int, ignore_label: Optional[int] = None) -> np.ndarray:
    """[classes, classes] int64 confusion matrix (rows: labels) of argmax predictions.

    Labels are [N] or per-pixel [N, H, W]; each chunk is reduced on the device, so
    full-resolution logits never reach host memory.
    """
    per_sample = self._confusion(num_classes, ignore_label)(variables, (images, labels))
    return per_sample.astype(np.int64).sum(0)


@caches.memoize
def shared_scorer(model: nn.Module, mean: tuple, std: tuple, output: str, chunk_size: int,
                  mesh: Mesh, score_precision: str = precision.DEFAULTS['score'],
                  evaluate_precision: str = precision.DEFAULTS['evaluate']) -> Scorer:
  """One Scorer per setting (model, normalisation, output, chunk, mesh, precisions), so every
  run of a process (a comparison's seeds and strategies, the tests) reuses its compiled
  functions."""
  return Scorer(model, mean, std, output, chunk_size, mesh, score_precision=score_precision,
                evaluate_precision=evaluate_precision)
