"""LL4AL's loss prediction module and margin ranking loss (Yoo & Kweon, CVPR 2019).

The module reads the backbone's per-stage feature maps (sown as 'stage1'..
into 'intermediates'): each is global-average-pooled and mapped by
Dense(128) + ReLU; the concatenation is mapped by Dense(1) to a predicted loss.
"""

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from tod_jax.errors import ConfigError


class LossPredictionModule(nn.Module):
  """Stage feature maps [B, H_s, W_s, C_s] x S -> predicted loss [B]."""
  width: int = 128

  @nn.compact
  def __call__(self, stages: Sequence[chex.Array]) -> chex.Array:
    hidden = [nn.relu(nn.Dense(self.width)(jnp.mean(s, axis=(1, 2)))) for s in stages]
    return nn.Dense(1)(jnp.concatenate(hidden, axis=-1))[:, 0].astype(jnp.float32)


def stage_features(intermediates: dict) -> list[chex.Array]:
  """The sown stage outputs 'stage1', 'stage2', .. in order."""
  names = sorted((k for k in intermediates if k.startswith('stage')), key=lambda k: int(k[5:]))
  if not names:
    raise ConfigError("The model sows no 'stage<i>' intermediates; LL4AL needs a model from "
                     'tod_jax.models that sows its stage outputs.')
  return [intermediates[k][0] for k in names]


def init_params(model: nn.Module, variables: dict, rng: chex.PRNGKey,
                image_shape: tuple[int, ...]) -> Any:
  """Initial params of the module for `model`'s stage shapes."""
  _, state = model.apply(variables, jnp.zeros((1, *image_shape), jnp.float32), train=False,
                         mutable=['intermediates'])
  stages = stage_features(state.get('intermediates', {}))  # {}: the model sows nothing.
  return LossPredictionModule().init(rng, stages)['params']


def predict(params: Any, intermediates: dict, detach: chex.Numeric = False) -> chex.Array:
  """Predicted loss [B]; `detach` stops the gradient into the backbone's features."""
  stages = stage_features(intermediates)
  stages = [jnp.where(detach, jax.lax.stop_gradient(s), s) for s in stages]
  return LossPredictionModule().apply({'params': params}, stages)


def ranking_loss(predicted: chex.Array, target: chex.Array, margin: float = 1.0) -> chex.Array:
  """LL4AL margin ranking loss over the pairs (i, B-1-i), i < B/2.

  mean_i max(0, margin - sign_i * (pred_i - pred_{B-1-i})), where sign_i = +1 if
  target_i > target_{B-1-i} else -1; the targets (true losses) get no gradient.

  Args:
    predicted: [B] predicted losses, B even.
    target: [B] true per-sample losses.
    margin: the hinge margin (1.0 in LL4AL).
  Returns:
    A scalar.
  """
  chex.assert_rank([predicted, target], 1)
  chex.assert_equal_shape([predicted, target])
  if predicted.shape[0] % 2:
    raise ConfigError(f'The ranking loss pairs samples; got an odd batch of {predicted.shape[0]}; '
                     'use an even --config.batch_size.')
  half = predicted.shape[0] // 2
  pred_diff = (predicted - predicted[::-1])[:half]
  target_diff = jax.lax.stop_gradient(target - target[::-1])[:half]
  sign = jnp.where(target_diff > 0, 1.0, -1.0)
  return jnp.mean(jnp.maximum(0.0, margin - sign * pred_diff))
