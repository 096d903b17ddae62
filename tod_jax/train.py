"""One active-learning cycle of semi-supervised training (Eqs. 6-9)."""

import dataclasses
import functools
import math
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tod_jax import (augment, batches, caches, loss_forms, loss_prediction, metric_writers,
                     precision, profiling, tod)
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError, UserError
from tod_jax.sharded_map import DATA_AXIS, make_mesh, put
from tod_jax.train_state import TrainState


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """The config values the compiled train step depends on, and nothing else.

  Two runs that differ only by seed, strategy or cycle count share one compiled
  step (the cache key is this object, not the whole config).
  """
  semi: bool
  loss_form: str
  tod_weight: float
  loss_output: str
  loss_teacher: str
  ema_decay: float
  ema_warmup: bool
  crop_padding: int
  flip: bool
  crop_size: int
  ll4al_weight: float
  ll4al_margin: float
  mean: tuple
  std: tuple
  ignore_label: Optional[int]
  precision: str = precision.DEFAULTS['train']  # Of the step's matmuls and convolutions.

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, dataset: Dataset) -> 'StepSettings':
    loss_forms.get(config.tod_loss_form)  # Fails fast on an unknown form.
    return cls(bool(config.semi), config.tod_loss_form, float(config.tod_weight),
               config.loss_output, config.loss_teacher, float(config.ema_decay),
               bool(config.ema_warmup), int(config.crop_padding), bool(config.flip),
               int(config.crop_size), float(config.ll4al.weight), float(config.ll4al.margin),
               tuple(dataset.mean), tuple(dataset.std), dataset.ignore_label,
               config.precision.train)

  @property
  def form(self) -> loss_forms.LossForm:
    return loss_forms.get(self.loss_form)


class Batch(NamedTuple):
  """A step's inputs after augmentation and normalisation."""
  labeled: chex.Array  # [B, H, W, C] float.
  labels: chex.Array  # [B] or per-pixel [B, H, W] int.
  unlabeled: Optional[chex.Array]  # [U, H, W, C] float; None without the TOD loss.


class Forward(NamedTuple):
  """The model's training-mode outputs on a Batch."""
  labeled: chex.Array  # Logits on batch.labeled.
  unlabeled: Optional[chex.Array]  # Logits on batch.unlabeled, or None.
  intermediates: tuple[Any, Any]  # What the model sowed on each (for heads and LL4AL).
  batch_stats: Any  # BatchNorm statistics after the passes.


class Teacher(NamedTuple):
  """The target of Eq. 7 on a Batch."""
  labeled: Optional[chex.Array]  # Outputs on batch.labeled (the reference form), or None.
  unlabeled: chex.Array  # Outputs on batch.unlabeled.
  batch_stats: Any  # The EMA model's BatchNorm statistics after its passes.


class LossTerms(NamedTuple):
  """What the loss reports besides its value."""
  batch_stats: Any
  logits: chex.Array  # On the labeled batch.
  supervised: chex.Array
  unsupervised: chex.Array
  ranking: chex.Array  # LL4AL's; 0 without its module.


def _prepare(settings: StepSettings, key: chex.PRNGKey, images: chex.Array,
             masks: Optional[chex.Array], segmentation: bool
             ) -> tuple[chex.Array, Optional[chex.Array]]:
  """Augmented, normalised images; segmentation masks get the same crop and flip."""
  if segmentation:
    images, masks = augment.augment_segmentation(key, images, masks, settings.crop_size,
                                                 settings.flip)
  else:
    images = augment.augment(key, images, settings.crop_padding, settings.flip)
  return augment.normalize(images, settings.mean, settings.std), masks


def _student(settings: StepSettings, state: TrainState, params: Any, batch: Batch,
             rng: chex.PRNGKey, collect: tuple[str, ...]) -> Forward:
  """The model in training mode on the labeled and unlabeled batch.

  One BatchNorm batch for both ('paper'), or two forward passes in turn ('reference').
  """
  mutable = ['batch_stats', *collect]
  run = lambda stats, x, key: state.apply_fn({'params': params, 'batch_stats': stats}, x,
                                             train=True, mutable=mutable, rngs={'dropout': key})
  x_l, x_u = batch.labeled, batch.unlabeled
  if x_u is None or settings.form.separate_batches:
    logits_l, upd_l = run(state.batch_stats, x_l, rng)
    if x_u is None:
      return Forward(logits_l, None, (upd_l.get('intermediates', {}), {}), upd_l['batch_stats'])
    logits_u, upd_u = run(upd_l['batch_stats'], x_u, jax.random.fold_in(rng, 1))
    return Forward(logits_l, logits_u,
                   (upd_l.get('intermediates', {}), upd_u.get('intermediates', {})),
                   upd_u['batch_stats'])
  n_l = x_l.shape[0]
  logits, upd = run(state.batch_stats, jnp.concatenate([x_l, x_u]), rng)
  inter = upd.get('intermediates', {})
  return Forward(logits[:n_l], logits[n_l:], (jax.tree.map(lambda a: a[:n_l], inter),
                                              jax.tree.map(lambda a: a[n_l:], inter)),
                 upd['batch_stats'])


def _teacher(settings: StepSettings, state: TrainState, batch: Batch,
             rng: chex.PRNGKey) -> Teacher:
  """The baseline of Eq. 7 on the batches.

  'ema': the EMA model in training mode with its own BatchNorm statistics (authors'
  code); 'cyclic': the fixed previous-cycle model w_{c-1} in inference mode.
  """
  on_labeled = settings.form.teacher_on_labeled
  if settings.loss_teacher == 'cyclic':
    if state.teacher_variables is None:
      raise ValueError("loss_teacher='cyclic' needs the state's teacher_variables (w_{c-1}); "
                       'pass teacher_variables= to create_train_state.')
    run = lambda x: state.apply_fn(state.teacher_variables, x, train=False)
    return Teacher(run(batch.labeled) if on_labeled else None, run(batch.unlabeled),
                   state.ema_batch_stats)
  stats = state.ema_batch_stats
  outputs = []
  for i, x in enumerate([batch.labeled, batch.unlabeled] if on_labeled else [batch.unlabeled]):
    logits, upd = state.apply_fn({'params': state.ema_params, 'batch_stats': stats}, x,
                                 train=True, mutable=['batch_stats'],
                                 rngs={'dropout': jax.random.fold_in(rng, i + 1)})
    outputs.append(logits)
    stats = upd['batch_stats']
  return Teacher(outputs[0] if on_labeled else None, outputs[-1], stats)


def _unsupervised(settings: StepSettings, params: Any, forward: Forward,
                  teacher: Teacher) -> chex.Array:
  """The unsupervised term of Eq. 9 in form settings.loss_form (tod_jax.loss_forms)."""
  out = lambda a: tod.model_output(a, settings.loss_output)
  if not settings.form.consistency_head:
    return loss_forms.paper(out(forward.unlabeled), out(teacher.unlabeled))
  if loss_forms.CONSISTENCY_HEAD not in params:
    raise ValueError(f'tod_loss_form={settings.loss_form!r} trains a consistency head, but the '
                     'params have none; build them with init_variables(..., '
                     'consistency_head=True).')
  head = params[loss_forms.CONSISTENCY_HEAD]
  heads = tuple(out(loss_forms.consistency_head(head, i['features'][0]))
                for i in forward.intermediates)
  return loss_forms.reference((out(forward.labeled), out(forward.unlabeled)), heads,
                              (out(teacher.labeled), out(teacher.unlabeled)))


def _loss(settings: StepSettings, state: TrainState, params: Any, head_params: Any,
          batch: Batch, teacher: Optional[Teacher], rng: chex.PRNGKey,
          detach_loss_head: bool) -> tuple[chex.Array, LossTerms]:
  """Eq. 9 (+ LL4AL's ranking loss with a loss prediction module)."""
  with_head = head_params is not None
  collect = ('intermediates',) if with_head or settings.form.consistency_head else ()
  forward = _student(settings, state, params, batch, rng, collect)
  sup = tod.supervised_loss(forward.labeled, batch.labels, ignore_label=settings.ignore_label)
  semi = batch.unlabeled is not None
  unsup = _unsupervised(settings, params, forward, teacher) if semi else jnp.zeros(())
  loss = tod.overall_loss(sup, unsup, settings.tod_weight if semi else 0.0)
  ranking = jnp.zeros(())
  if with_head:  # LL4AL: rank the labeled samples' true losses.
    predicted = loss_prediction.predict(head_params, forward.intermediates[0], detach_loss_head)
    true_losses = optax.softmax_cross_entropy_with_integer_labels(forward.labeled, batch.labels)
    ranking = loss_prediction.ranking_loss(predicted, true_losses, settings.ll4al_margin)
    loss = loss + settings.ll4al_weight * ranking
  return loss, LossTerms(forward.batch_stats, forward.labeled, sup, unsup, ranking)


def _update_loss_head(state: TrainState, head_grads: Any) -> TrainState:
  """One optimizer step of LL4AL's module with the model's optimizer settings."""
  updates, opt_state = state.tx.update(head_grads, state.loss_head_opt_state,
                                       state.loss_head_params)
  return state.replace(loss_head_params=optax.apply_updates(state.loss_head_params, updates),
                       loss_head_opt_state=opt_state)


def _update_ema(settings: StepSettings, state: TrainState, ema_batch_stats: Any,
                ema_forward: bool) -> TrainState:
  """Eq. 6 on the parameters; without an EMA forward pass the BN statistics are averaged too."""
  decay = tod.ema_decay(state.step, settings.ema_decay, settings.ema_warmup)
  if not ema_forward:
    ema_batch_stats = tod.ema_update(state.batch_stats, ema_batch_stats, decay)
  return state.replace(ema_params=tod.ema_update(state.params, state.ema_params, decay),
                       ema_batch_stats=ema_batch_stats)


def train_step(state: TrainState, labeled: dict, unlabeled: dict, rng: chex.PRNGKey,
               detach_loss_head: bool = False, *, settings: StepSettings
               ) -> tuple[TrainState, dict]:
  """One SGD step on CE(labeled) + lambda * TOD(unlabeled) (Eq. 9), then the EMA update (Eq. 6).

  With a loss prediction module in the state (LL4AL), its margin ranking loss
  on the labeled batch is added with weight ll4al.weight.

  Args:
    state: current train state.
    labeled: {'image': uint8 [B, H, W, C], 'label': int32 [B] or per-pixel masks [B, H, W]}.
    unlabeled: {'image': uint8 [U, H, W, C]} (ignored when settings.semi is False).
    rng: PRNG key for augmentation and dropout (folded with the step).
    detach_loss_head: (static) stop the ranking loss's gradient into the model.
    settings: the config values the step uses (static).
  Returns:
    The new state and scalar metrics {'loss', 'sup_loss', 'unsup_loss', 'accuracy'}
    (segmentation: pixel accuracy over non-ignored pixels; 'ranking_loss' with a loss
    prediction module).
  """
  rng = jax.random.fold_in(rng, state.step)
  aug_l, aug_u, dropout_rng = jax.random.split(rng, 3)
  segmentation = labeled['label'].ndim == 3  # Per-pixel masks; static under jit.
  x_l, labels = _prepare(settings, aug_l, labeled['image'], labeled['label'], segmentation)
  x_u = (_prepare(settings, aug_u, unlabeled['image'], None, segmentation)[0] if settings.semi
         else None)
  batch = Batch(x_l, labels, x_u)
  teacher = _teacher(settings, state, batch, dropout_rng) if settings.semi else None
  ema_stats = state.ema_batch_stats if teacher is None else teacher.batch_stats
  with_head = state.loss_head_params is not None
  grad_fn = jax.value_and_grad(
      lambda p, h: _loss(settings, state, p, h, batch, teacher, dropout_rng, detach_loss_head),
      argnums=(0, 1), has_aux=True)
  (loss, terms), (grads, head_grads) = grad_fn(state.params, state.loss_head_params)
  if with_head:
    state = _update_loss_head(state, head_grads)
  state = state.apply_gradients(grads=grads, batch_stats=terms.batch_stats)
  state = _update_ema(settings, state, ema_stats,
                      settings.semi and settings.loss_teacher == 'ema')
  counted = (jnp.ones(labels.shape, bool) if settings.ignore_label is None
             else labels != settings.ignore_label)
  correct = (jnp.argmax(terms.logits, -1) == labels) & counted
  metrics = {'loss': loss, 'sup_loss': terms.supervised, 'unsup_loss': terms.unsupervised,
             'accuracy': jnp.sum(correct) / jnp.maximum(jnp.sum(counted), 1)}
  if with_head:
    metrics['ranking_loss'] = terms.ranking
  return state, metrics


def _indexed_train_step(state: TrainState, data: dict, labeled_indices: chex.Array,
                        unlabeled_indices: Optional[chex.Array], rng: chex.PRNGKey,
                        detach_loss_head: bool = False, **kwargs) -> tuple[TrainState, dict]:
  """train_step on batches gathered by index from the device-resident pool `data`."""
  labeled = {'image': data['image'][labeled_indices], 'label': data['label'][labeled_indices]}
  unlabeled = ({} if unlabeled_indices is None
               else {'image': data['image'][unlabeled_indices]})
  return train_step(state, labeled, unlabeled, rng, detach_loss_head, **kwargs)


def _scanned_train_step(state: TrainState, data: dict, labeled_block: chex.Array,
                        unlabeled_block: Optional[chex.Array], rng: chex.PRNGKey,
                        detach_loss_head: bool = False, **kwargs) -> tuple[TrainState, dict]:
  """_indexed_train_step over a block of K steps in one `lax.scan`: indices [K, B] (and
  [K, U], or None); the metrics come back stacked, [K] each."""
  def body(state, indices):
    return _indexed_train_step(state, data, *indices, rng, detach_loss_head, **kwargs)
  return jax.lax.scan(body, state, (labeled_block, unlabeled_block))


def check_batch_sizes(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Raises unless every batch splits evenly over the mesh's devices."""
  sizes = {'batch_size': config.batch_size}
  if config.semi:
    sizes['unlabeled_batch_size'] = config.unlabeled_batch_size
  uneven = {name: size for name, size in sizes.items() if size % mesh.size}
  if uneven:
    raise ConfigError(f'{uneven} cannot be split evenly over the {mesh.size} devices of '
                     f'the mesh; set --config.batch_size and --config.unlabeled_batch_size '
                     f'to multiples of {mesh.size}.')


def make_train_step(config: ml_collections.ConfigDict, dataset: Dataset,
                    mesh: Optional[Mesh] = None, indexed: bool = False,
                    scanned: bool = False) -> Callable:
  """The jitted train_step, data-parallel over `mesh` (default: all devices).

  The state and the key are replicated and the batches split along the mesh's
  'data' axis; GSPMD all-reduces gradients, losses and BatchNorm statistics, so
  the step equals a single device's on the whole batch. The state's buffers
  are donated. Call as `step(state, labeled, unlabeled, rng, detach_loss_head=False)`;
  with `indexed=True` as `step(state, data, labeled_indices, unlabeled_indices,
  rng, detach_loss_head=False)`, gathering the batches inside jit from `data`
  ({'image', 'label'} of the whole pool, replicated on the devices; unlabeled
  indices None without the TOD loss). `scanned=True` (indexed too): several steps in one
  dispatch, `step(state, data, labeled_block [K, B], unlabeled_block [K, U] or None, rng)`,
  returning metrics stacked [K] (the same as K calls, in one `lax.scan`).
  """
  mesh = mesh if mesh is not None else make_mesh()
  check_batch_sizes(config, mesh)
  return _make_step(StepSettings.create(config, dataset), mesh, indexed, scanned)


@caches.memoize
def _make_step(settings: StepSettings, mesh: Mesh, indexed: bool,
               scanned: bool = False) -> Callable:
  """make_train_step's step, one per setting, so every cycle (and run) reuses its compilation."""
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  kwargs = dict(settings=settings)
  if scanned:
    block = NamedSharding(mesh, P(None, DATA_AXIS))  # Each step's batch split over devices.
    fn, batch_shardings = functools.partial(_scanned_train_step, **kwargs), (
        replicated, block, block)
  elif indexed:
    fn, batch_shardings = functools.partial(_indexed_train_step, **kwargs), (
        replicated, sharded, sharded)
  else:
    fn, batch_shardings = functools.partial(train_step, **kwargs), (sharded, sharded)
  fn = precision.traced_at(settings.precision, fn)
  in_shardings = (replicated, *batch_shardings, replicated)
  # jit takes no keyword arguments with in_shardings: detach_loss_head goes in by position.
  jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=replicated,
                   static_argnums=len(in_shardings), donate_argnums=0)

  def step(*args, detach_loss_head: bool = False):
    # Inputs already on the mesh stay; others move there, so every call has the
    # same input types and the step compiles once.
    return jitted(*[put(a, s) for a, s in zip(args, in_shardings)], detach_loss_head)
  step.jitted = jitted  # For lowering: its HLO, its cost analysis.
  return step


def _epoch_summary(history: list[dict], cycle: int, epoch: int) -> dict:
  """Mean metrics of an epoch's steps (history: per dispatch, a scalar or [K] per metric);
  raises NonFiniteLossError if any is not finite."""
  metrics = {k: float(v) for k, v in jax.tree.map(
      lambda *m: jnp.mean(jnp.concatenate([jnp.atleast_1d(x) for x in m])), *history).items()}
  if not all(math.isfinite(v) for v in metrics.values()):
    raise NonFiniteLossError(
        f'Loss is not finite at cycle {cycle}, epoch {epoch + 1} ({metrics}); lower '
        '--config.learning_rate or --config.tod_weight. The last completed cycle\'s '
        'checkpoint and labeled set are untouched.')
  return metrics


@dataclasses.dataclass(frozen=True)
class CycleInputs:
  """What one cycle of training draws from: the pool, its labeled and unlabeled indices, and
  the randomness (batches from `batch_rng`, augmentation and dropout from `key`)."""
  dataset: Dataset
  labeled: np.ndarray
  unlabeled: np.ndarray
  batch_rng: np.random.Generator
  key: chex.PRNGKey
  cycle: int  # 1-based; named by the progress bar and by errors.


def train_cycle(state: TrainState, inputs: CycleInputs, config: ml_collections.ConfigDict, *,
                mesh: Optional[Mesh] = None,
                writer: metric_writers.MetricWriter = metric_writers.NullWriter(),
                on_step: Optional[Callable[[TrainState, int], None]] = None,
                stop_at: Iterable[int] = ()) -> tuple[TrainState, dict]:
  """Trains `config.num_epochs` epochs over the labeled set, data-parallel over `mesh`.

  With a loss prediction module (LL4AL) its gradient into the model is stopped
  from epoch round(config.ll4al.detach_at * num_epochs) on (LL4AL: 120 of 200).
  Every batch has exactly `config.batch_size` samples (batches.epoch), so the step
  compiles once. A pool that fits (batches.keeps_data_on_device) is put on
  the devices once and each step receives only indices; a larger one is streamed,
  two batches ahead. Both give the same result. With the pool on the devices,
  config.steps_per_dispatch steps run in one dispatch (a `lax.scan`; the epoch's
  remainder one step at a time). Each epoch's mean metrics go to
  `writer` ('train/<name>' at the step count). config.profile_dir: a jax.profiler trace of
  cycle 1's second epoch goes there (tod_jax.profiling).
  Raises NonFiniteLossError (the state passed in is then unusable: it was donated)
  as soon as an epoch's loss is not finite. `on_step(state, steps_done)`, if
  given, runs after every dispatch (steps counted from 1 in this call); a dispatch
  ends at every count in `stop_at`, so on_step sees those states. It must copy
  what it keeps, because the next dispatch donates the state's buffers.
  """
  dataset = inputs.dataset
  mesh = mesh if mesh is not None else make_mesh()
  on_device = batches.keeps_data_on_device(config, dataset)
  step_fn = make_train_step(config, dataset, mesh, indexed=on_device)
  per_dispatch = config.steps_per_dispatch if on_device else 1
  block_fn = (make_train_step(config, dataset, mesh, indexed=True, scanned=True)
              if per_dispatch > 1 else None)
  stop_at = frozenset(stop_at)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  state, key = put(state, replicated), put(inputs.key, replicated)
  pool = (put({'image': dataset.train_images, 'label': dataset.train_labels}, replicated)
          if on_device else None)
  bar = tqdm.trange(config.num_epochs,
                    desc=f'cycle {inputs.cycle} ({len(inputs.labeled)} labeled)',
                    disable=not config.progress_bar, leave=False, dynamic_ncols=True)
  epoch_metrics, done = {}, 0
  detach_from = round(config.ll4al.detach_at * config.num_epochs)
  for epoch in bar:
    detach = state.loss_head_params is not None and epoch >= detach_from
    order, unlabeled = batches.epoch(inputs.batch_rng, inputs.labeled, inputs.unlabeled, config,
                                     dataset.train_images, sharded)
    if block_fn is None:
      dispatched = ((step_fn, batch, 1) for batch in
                    batches.device_batches(dataset, pool, order, unlabeled, sharded))
    else:
      dispatched = _blocks(step_fn, block_fn, pool, order, unlabeled, mesh,
                           batches.dispatches(len(order), per_dispatch, done, stop_at))
    history = []
    with profiling.epoch_trace(config.profile_dir, inputs.cycle, epoch, config.num_epochs):
      for fn, batch, steps in dispatched:
        state, metrics = fn(state, *batch, key, detach_loss_head=detach)
        history.append(metrics)
        done += steps
        if on_step is not None:
          on_step(state, done)
      epoch_metrics = _epoch_summary(history, inputs.cycle, epoch)  # Waits for the epoch.
    bar.set_postfix(loss=f"{epoch_metrics['loss']:.4f}", acc=f"{epoch_metrics['accuracy']:.3f}")
    writer.write_scalars(int(state.step), {f'train/{k}': v for k, v in epoch_metrics.items()})
  return state, epoch_metrics


def _blocks(step_fn: Callable, block_fn: Callable, pool: dict, order: np.ndarray,
            unlabeled: list, mesh: Mesh, plan: list[tuple[int, int]]) -> Iterator[tuple]:
  """(the step function, its batch arguments, steps) per dispatch of `plan`: a scanned block
  gets its steps' indices stacked [K, batch], a single step its batch's."""
  sharded, block = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P(None, DATA_AXIS))
  for start, stop in plan:
    labeled, rest = order[start:stop], unlabeled[start:stop]
    rest = None if rest[0] is None else np.stack(rest)
    if stop - start == 1:
      yield step_fn, (pool, put(labeled[0], sharded),
                      None if rest is None else put(rest[0], sharded)), 1
    else:
      yield block_fn, (pool, put(labeled, block), None if rest is None else put(rest, block)), (
          stop - start)
