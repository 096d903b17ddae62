"""The train state: params, BatchNorm statistics, optimizer state and the EMA model."""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics and the EMA (mean-teacher) model of Eq. 6.

  Optional parts, None unless a run uses them: `loss_head_params` and
  `loss_head_opt_state` (LL4AL's loss prediction module, updated with `tx`
  alongside the model) and `loss_baseline` ({'params', 'batch_stats'} of the
  fixed model w_{c-1} that Eq. 7 compares with when config.loss_baseline='cyclic').
  """
  batch_stats: Any
  ema_params: Any
  ema_batch_stats: Any
  loss_head_params: Any = None
  loss_head_opt_state: Any = None
  loss_baseline: Any = None

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}

  @property
  def ema_variables(self) -> dict:
    return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}


def create_optimizer(config: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
  """SGD+momentum+weight decay (or Adam); lr x lr_decay_factor after lr_decay_at of `steps`."""
  schedule = optax.piecewise_constant_schedule(
      config.learning_rate, {int(config.lr_decay_at * steps): config.lr_decay_factor})
  if config.optimizer == 'sgd':
    # PyTorch-style coupled weight decay, as in the paper's protocol.
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(schedule, momentum=config.momentum))
  if config.optimizer == 'adam':
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(schedule))
  raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'.")


def init_variables(model: nn.Module, rng: chex.PRNGKey, image_shape: tuple[int, ...]) -> dict:
  """Initial {'params', 'batch_stats'} for one input of `image_shape` (H, W, C)."""
  variables = jax.jit(model.init, static_argnames='train')(
      rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def create_train_state(model: nn.Module, variables: dict, tx: optax.GradientTransformation,
                       ema_variables: dict | None = None, step: int = 0, *,
                       loss_head_params: Any = None,
                       loss_baseline: dict | None = None) -> TrainState:
  """A fresh optimizer state around `variables`; the EMA model starts as a copy unless given.

  The train step donates the state's buffers, so the EMA model and the loss
  baseline get their own copies.
  """
  ema_variables = ema_variables or jax.tree.map(jnp.copy, variables)
  head_opt_state = None if loss_head_params is None else tx.init(loss_head_params)
  if loss_baseline is not None:
    loss_baseline = jax.tree.map(jnp.copy, loss_baseline)
  return TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=model.apply,
                    params=variables['params'], tx=tx, opt_state=tx.init(variables['params']),
                    batch_stats=variables['batch_stats'], ema_params=ema_variables['params'],
                    ema_batch_stats=ema_variables['batch_stats'],
                    loss_head_params=loss_head_params, loss_head_opt_state=head_opt_state,
                    loss_baseline=loss_baseline)
