"""The train state: params, BatchNorm statistics, optimizer state and the EMA model."""

from typing import Any, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from tod_jax import caches, initializers, loss_forms
from tod_jax.errors import ConfigError


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics and the EMA (mean-teacher) model of Eq. 6.

  Optional parts, None unless a run uses them: `loss_head_params` and
  `loss_head_opt_state` (LL4AL's loss prediction module, updated with `tx`
  alongside the model) and `teacher_variables` ({'params', 'batch_stats'} of the
  fixed model w_{c-1} that Eq. 7 compares with when config.loss_teacher='cyclic').
  """
  batch_stats: Any
  ema_params: Any
  ema_batch_stats: Any
  loss_head_params: Any = None
  loss_head_opt_state: Any = None
  teacher_variables: Any = None

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}

  @property
  def ema_variables(self) -> dict:
    return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}


NO_DECAY = 2**31 - 1  # decay_step that never comes.


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD+momentum+weight decay (or Adam); lr x lr_decay_factor from step `decay_step` on.

  `decay_step` is a hyperparameter in the optimizer state (optax.inject_hyperparams),
  set per cycle by create_train_state, so every cycle of a run shares one
  transformation and the jitted train step compiles once per run.
  """
  if config.optimizer not in ('sgd', 'adam'):
    raise ConfigError(f"Unknown optimizer {config.optimizer!r}; set --config.optimizer to 'sgd' or "
                      "'adam'.")
  return _optimizer(config.optimizer, config.learning_rate, config.momentum,
                    config.weight_decay, config.lr_decay_factor)


@caches.memoize
def _optimizer(kind: str, learning_rate: float, momentum: float, weight_decay: float,
               decay_factor: float) -> optax.GradientTransformation:

  def make(decay_step):
    schedule = lambda count: learning_rate * jnp.where(count >= decay_step, decay_factor, 1.0)
    # PyTorch-style coupled weight decay, as in the paper's protocol.
    update = (optax.sgd(schedule, momentum=momentum) if kind == 'sgd'
              else optax.adam(schedule))
    return optax.chain(optax.add_decayed_weights(weight_decay), update)
  return optax.inject_hyperparams(make)(decay_step=NO_DECAY)


def lr_decay_step(config: ml_collections.ConfigDict, num_steps: int) -> int:
  """The step of a `num_steps` cycle from which the learning rate is decayed."""
  return int(config.lr_decay_at * num_steps)


@caches.memoize
def _jitted_init(model: nn.Module):
  """One jitted `model.init` per model: a fresh `jax.jit(model.init)` misses jax's cache (a new
  bound method each time) and would compile again for every run."""
  return jax.jit(model.init, static_argnames='train')


def init_variables(model: nn.Module, rng: chex.PRNGKey, image_shape: tuple[int, ...],
                   consistency_head: bool = False, param_init: str = 'flax') -> dict:
  """Initial {'params', 'batch_stats'} for one input of `image_shape` (H, W, C).

  With `consistency_head` (tod_loss_form='reference') the params also hold the
  consistency head, a Dense layer on the model's sown 'features'. `param_init`:
  flax's layer defaults or PyTorch's ('pytorch', initializers.py).
  """
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = _jitted_init(model)(rng, x, train=False)
  params = variables['params']
  if consistency_head:
    logits, sown = model.apply(variables, x, train=False, mutable=['intermediates'])
    sown = sown.get('intermediates', {})  # Nothing at all when the model sows nothing.
    if logits.ndim != 2 or 'features' not in sown:
      raise ConfigError("tod_loss_form='reference' needs a classification model that sows its "
                       "pooled 'features'; use --config.tod_loss_form=paper for this model.")
    params = {**params, loss_forms.CONSISTENCY_HEAD: loss_forms.init_consistency_head(
        jax.random.fold_in(rng, 1), sown['features'][0], logits.shape[-1])}
  params = initializers.apply(param_init, params, jax.random.fold_in(rng, 2))
  return {'params': params, 'batch_stats': variables.get('batch_stats', {})}


def create_train_state(model: nn.Module, variables: dict, tx: optax.GradientTransformation,
                       ema_variables: dict | None = None, step: int = 0, *,
                       decay_step: Optional[int] = None, loss_head_params: Any = None,
                       teacher_variables: dict | None = None) -> TrainState:
  """A fresh optimizer state around `variables`; the EMA model starts as a copy unless given.

  `decay_step` (see create_optimizer and lr_decay_step): the step from which the
  learning rate is decayed; None: never. The train step donates the state's
  buffers, so the EMA model and the cyclic teacher get their own copies.
  """
  def init(params):
    opt_state = tx.init(params)
    opt_state.hyperparams['decay_step'] = jnp.asarray(
        NO_DECAY if decay_step is None else decay_step, jnp.int32)
    return opt_state

  ema_variables = ema_variables or jax.tree.map(jnp.copy, variables)
  head_opt_state = None if loss_head_params is None else init(loss_head_params)
  if teacher_variables is not None:
    teacher_variables = jax.tree.map(jnp.copy, teacher_variables)
  return TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=model.apply,
                    params=variables['params'], tx=tx, opt_state=init(variables['params']),
                    batch_stats=variables['batch_stats'], ema_params=ema_variables['params'],
                    ema_batch_stats=ema_variables['batch_stats'],
                    loss_head_params=loss_head_params, loss_head_opt_state=head_opt_state,
                    teacher_variables=teacher_variables)
