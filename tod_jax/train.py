"""One active-learning cycle of semi-supervised training (Eqs. 6-9)."""

import functools
import math
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tod_jax import input_pipeline, loss_prediction, tod
from tod_jax.input_pipeline import Dataset
from tod_jax.sharded_map import DATA_AXIS, make_mesh, put
from tod_jax.train_state import TrainState


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


def _prepare(key: chex.PRNGKey, images: chex.Array, masks: Optional[chex.Array],
             config: ml_collections.ConfigDict, mean: tuple, std: tuple, segmentation: bool
             ) -> tuple[chex.Array, Optional[chex.Array]]:
  """Augmented, normalised images; segmentation masks get the same crop and flip."""
  if segmentation:
    images, masks = input_pipeline.augment_segmentation(key, images, masks, config.crop_size,
                                                        config.flip)
  else:
    images = input_pipeline.augment(key, images, config.crop_padding, config.flip)
  return input_pipeline.normalize(images, mean, std), masks


def train_step(state: TrainState, labeled: dict, unlabeled: dict, rng: chex.PRNGKey,
               detach_loss_head: bool = False, *, config: ml_collections.ConfigDict,
               mean: tuple, std: tuple, ignore_label: Optional[int] = None
               ) -> tuple[TrainState, dict]:
  """One SGD step on CE(labeled) + lambda * TOD(unlabeled), then the EMA update.

  With a loss prediction module in the state (LL4AL), its margin ranking loss
  on the labeled batch is added with weight config.ll4al_weight.

  Args:
    state: current train state.
    labeled: {'image': uint8 [B, H, W, C], 'label': int32 [B] or per-pixel masks [B, H, W]}.
    unlabeled: {'image': uint8 [U, H, W, C]} (ignored when config.semi is False).
    rng: PRNG key for augmentation and dropout (folded with the step).
    detach_loss_head: (static) stop the ranking loss's gradient into the model.
    config: the run config (static).
    mean, std: per-channel normalisation.
    ignore_label: label excluded from the loss and accuracy (segmentation), or None.
  Returns:
    The new state and scalar metrics {'loss', 'sup_loss', 'unsup_loss', 'accuracy'}
    (segmentation: pixel accuracy over non-ignored pixels; 'ranking_loss' with a loss
    prediction module).
  """
  rng = jax.random.fold_in(rng, state.step)
  aug_l, aug_u, dropout_rng = jax.random.split(rng, 3)
  segmentation = labeled['label'].ndim == 3  # Per-pixel masks; static under jit.
  prep = functools.partial(_prepare, config=config, mean=mean, std=std,
                           segmentation=segmentation)
  x_l, labels = prep(aug_l, labeled['image'], labeled['label'])
  n_l = x_l.shape[0]
  x = jnp.concatenate([x_l, prep(aug_u, unlabeled['image'], None)[0]]) if config.semi else x_l

  ema_batch_stats = state.ema_batch_stats
  ema_forward = config.semi and config.loss_baseline == 'ema'
  if ema_forward:
    # The baseline (EMA) model runs in training mode with its own BatchNorm statistics.
    base_logits, ema_updates = state.apply_fn(
        state.ema_variables, x[n_l:], train=True, mutable=['batch_stats'],
        rngs={'dropout': jax.random.fold_in(dropout_rng, 1)})
    ema_batch_stats = ema_updates['batch_stats']
  elif config.semi:  # 'cyclic': the fixed previous-cycle model w_{c-1}, inference mode.
    if state.loss_baseline is None:
      raise ValueError("loss_baseline='cyclic' needs the state's loss_baseline (w_{c-1}); "
                       'pass loss_baseline= to create_train_state.')
    base_logits = state.apply_fn(state.loss_baseline, x[n_l:], train=False)
  if config.semi:
    base_out = tod.model_output(base_logits, config.loss_output)
  with_head = state.loss_head_params is not None

  def loss_fn(params, head_params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
        mutable=['batch_stats', 'intermediates'] if with_head else ['batch_stats'],
        rngs={'dropout': dropout_rng})
    sup = tod.supervised_loss(logits[:n_l], labels, ignore_label=ignore_label)
    unsup = (tod.unsupervised_tod_loss(tod.model_output(logits[n_l:], config.loss_output),
                                       base_out) if config.semi else jnp.zeros(()))
    loss = tod.overall_loss(sup, unsup, config.tod_weight if config.semi else 0.0)
    ranking = jnp.zeros(())
    if with_head:  # LL4AL: rank the labeled samples' true losses.
      labeled_stages = jax.tree.map(lambda a: a[:n_l], updates['intermediates'])
      predicted = loss_prediction.predict(head_params, labeled_stages, detach_loss_head)
      true_losses = optax.softmax_cross_entropy_with_integer_labels(logits[:n_l],
                                                                     labeled['label'])
      ranking = loss_prediction.ranking_loss(predicted, true_losses, config.ll4al_margin)
      loss = loss + config.ll4al_weight * ranking
    return loss, (updates['batch_stats'], logits[:n_l], sup, unsup, ranking)

  (loss, (batch_stats, logits_l, sup, unsup, ranking)), (grads, head_grads) = (
      jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
          state.params, state.loss_head_params))
  if with_head:
    head_updates, head_opt_state = state.tx.update(head_grads, state.loss_head_opt_state,
                                                   state.loss_head_params)
    state = state.replace(
        loss_head_params=optax.apply_updates(state.loss_head_params, head_updates),
        loss_head_opt_state=head_opt_state)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  decay = tod.ema_decay(state.step, config.ema_decay, config.ema_warmup)
  if not ema_forward:  # No EMA forward pass: average the statistics like the weights.
    ema_batch_stats = tod.ema_update(batch_stats, ema_batch_stats, decay)
  state = state.replace(ema_params=tod.ema_update(state.params, state.ema_params, decay),
                        ema_batch_stats=ema_batch_stats)
  counted = jnp.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label
  correct = (jnp.argmax(logits_l, -1) == labels) & counted
  metrics = {'loss': loss, 'sup_loss': sup, 'unsup_loss': unsup,
             'accuracy': jnp.sum(correct) / jnp.maximum(jnp.sum(counted), 1)}
  if with_head:
    metrics['ranking_loss'] = ranking
  return state, metrics


def _indexed_train_step(state: TrainState, data: dict, labeled_indices: chex.Array,
                        unlabeled_indices: Optional[chex.Array], rng: chex.PRNGKey,
                        detach_loss_head: bool = False, **kwargs) -> tuple[TrainState, dict]:
  """train_step on batches gathered by index from the device-resident pool `data`."""
  labeled = {'image': data['image'][labeled_indices], 'label': data['label'][labeled_indices]}
  unlabeled = ({} if unlabeled_indices is None
               else {'image': data['image'][unlabeled_indices]})
  return train_step(state, labeled, unlabeled, rng, detach_loss_head, **kwargs)


def check_batch_sizes(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Raises unless every batch splits evenly over the mesh's devices."""
  sizes = {'batch_size': config.batch_size}
  if config.semi:
    sizes['unlabeled_batch_size'] = config.unlabeled_batch_size
  uneven = {name: size for name, size in sizes.items() if size % mesh.size}
  if uneven:
    raise ValueError(f'{uneven} cannot be split evenly over the {mesh.size} devices of '
                     f'the mesh; set --config.batch_size and --config.unlabeled_batch_size '
                     f'to multiples of {mesh.size}.')


def make_train_step(config: ml_collections.ConfigDict, dataset: Dataset,
                    mesh: Optional[Mesh] = None, indexed: bool = False) -> Callable:
  """The jitted train_step, data-parallel over `mesh` (default: all devices).

  The state and the key are replicated and the batches split along the mesh's
  'data' axis; GSPMD all-reduces gradients, losses and BatchNorm statistics, so
  the step equals a single device's on the whole batch. The state's buffers
  are donated. Call as `step(state, labeled, unlabeled, rng, detach_loss_head=False)`;
  with `indexed=True` as `step(state, data, labeled_indices, unlabeled_indices,
  rng, detach_loss_head=False)`, gathering the batches inside jit from `data`
  ({'image', 'label'} of the whole pool, replicated on the devices; unlabeled
  indices None without the TOD loss).
  """
  mesh = mesh if mesh is not None else make_mesh()
  check_batch_sizes(config, mesh)
  return _make_step(ml_collections.FrozenConfigDict(config), tuple(dataset.mean),
                    tuple(dataset.std), dataset.ignore_label, mesh, indexed)


@functools.lru_cache(maxsize=16)
def _make_step(config: ml_collections.FrozenConfigDict, mean: tuple, std: tuple,
               ignore_label: Optional[int], mesh: Mesh, indexed: bool) -> Callable:
  """make_train_step's step, one per setting, so every cycle of a run reuses its compilation."""
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  kwargs = dict(config=config, mean=mean, std=std, ignore_label=ignore_label)
  if indexed:
    fn, batch_shardings = functools.partial(_indexed_train_step, **kwargs), (
        replicated, sharded, sharded)
  else:
    fn, batch_shardings = functools.partial(train_step, **kwargs), (sharded, sharded)
  in_shardings = (replicated, *batch_shardings, replicated)
  # jit takes no keyword arguments with in_shardings: detach_loss_head goes in by position.
  jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=replicated,
                   static_argnums=len(in_shardings), donate_argnums=0)

  def step(*args, detach_loss_head: bool = False):
    # Inputs already on the mesh stay; others move there, so every call has the
    # same input types and the step compiles once.
    return jitted(*[put(a, s) for a, s in zip(args, in_shardings)], detach_loss_head)
  return step


def steps_per_epoch(num_labeled: int, batch_size: int) -> int:
  return max(1, math.ceil(num_labeled / batch_size))


def train_cycle(state: TrainState, dataset: Dataset, labeled: np.ndarray,
                unlabeled: np.ndarray, config: ml_collections.ConfigDict,
                np_rng: np.random.Generator, key: chex.PRNGKey, *, cycle: int,
                mesh: Optional[Mesh] = None, writer: Any = None,
                on_step: Optional[Callable[[TrainState, int], None]] = None
                ) -> tuple[TrainState, dict]:
  """Trains `config.num_epochs` epochs over the labeled set, data-parallel over `mesh`.

  With a loss prediction module (LL4AL) its gradient into the model is stopped
  from epoch round(config.ll4al_detach_at * num_epochs) on (LL4AL: 120 of 200).
  Every batch has exactly `config.batch_size` samples (the last batch of an epoch
  is filled from the start of the epoch's permutation), so the step compiles once.
  A pool that fits (input_pipeline.keeps_data_on_device) is put on the devices
  once and each step receives only indices; a larger one is streamed, two batches
  ahead. Both give the same result.
  Raises NonFiniteLossError (the state passed in is then unusable: it was donated)
  as soon as an epoch's loss is not finite. `on_step(state, steps_done)`, if
  given, runs after every step (steps counted from 1 in this call); it must copy
  what it keeps, because the next step donates the state's buffers.
  """
  mesh = mesh if mesh is not None else make_mesh()
  on_device = input_pipeline.keeps_data_on_device(config, dataset)
  step_fn = make_train_step(config, dataset, mesh, indexed=on_device)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  state, key = put(state, replicated), put(key, replicated)
  if on_device:
    pool = put({'image': dataset.train_images, 'label': dataset.train_labels}, replicated)
  n_steps = steps_per_epoch(len(labeled), config.batch_size)
  bar = tqdm.trange(config.num_epochs, desc=f'cycle {cycle} ({len(labeled)} labeled)',
                    disable=not config.progress_bar, leave=False, dynamic_ncols=True)
  epoch_metrics = {}
  detach_from = round(config.ll4al_detach_at * config.num_epochs)
  for epoch in bar:
    detach = state.loss_head_params is not None and epoch >= detach_from
    order = np.resize(np_rng.permutation(labeled), n_steps * config.batch_size)
    order = order.reshape(n_steps, config.batch_size).astype(np.int32)
    unl = [None] * n_steps
    if config.semi:
      unl = np_rng.choice(unlabeled, size=(n_steps, config.unlabeled_batch_size),
                          replace=len(unlabeled) < n_steps * config.unlabeled_batch_size
                          ).astype(np.int32)
    if on_device:
      batches = ((pool, *indices) for indices in
                 input_pipeline.prefetch_to_device(zip(order, unl), sharded))
    else:
      batches = input_pipeline.prefetch_to_device(
          (({'image': dataset.train_images[o], 'label': dataset.train_labels[o]},
            {} if u is None else {'image': dataset.train_images[u]}) for o, u in zip(order, unl)),
          sharded)
    history = []
    for i, batch in enumerate(batches):
      state, metrics = step_fn(state, *batch, key, detach_loss_head=detach)
      history.append(metrics)
      if on_step is not None:
        on_step(state, epoch * n_steps + i + 1)
    epoch_metrics = {k: float(v) for k, v in jax.tree.map(
        lambda *m: jnp.mean(jnp.stack(m)), *history).items()}
    if not all(math.isfinite(v) for v in epoch_metrics.values()):
      raise NonFiniteLossError(
          f'Loss is not finite at cycle {cycle}, epoch {epoch + 1} ({epoch_metrics}); lower '
          '--config.learning_rate or --config.tod_weight. The last completed cycle\'s '
          'checkpoint and labeled set are untouched.')
    bar.set_postfix(loss=f"{epoch_metrics['loss']:.4f}", acc=f"{epoch_metrics['accuracy']:.3f}")
    if writer is not None:
      global_step = int(state.step)
      for name, value in epoch_metrics.items():
        writer.add_scalar(f'train/{name}', value, global_step)
  return state, epoch_metrics
