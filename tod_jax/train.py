"""One active-learning cycle of semi-supervised training (Eqs. 6-9)."""

import dataclasses
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

from tod_jax import augment, batches, loss_forms, loss_prediction, precision, tod
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


def _prepare(s: StepSettings, key: chex.PRNGKey, images: chex.Array, masks: Optional[chex.Array],
             segmentation: bool) -> tuple[chex.Array, Optional[chex.Array]]:
  """Augmented, normalised images; segmentation masks get the same crop and flip."""
  if segmentation:
    images, masks = augment.augment_segmentation(key, images, masks, s.crop_size, s.flip)
  else:
    images = augment.augment(key, images, s.crop_padding, s.flip)
  return augment.normalize(images, s.mean, s.std), masks


def _student(s: StepSettings, state: TrainState, params: Any, x_l: chex.Array,
             x_u: Optional[chex.Array], rng: chex.PRNGKey, collect: tuple[str, ...]):
  """The model in training mode on the labeled and unlabeled batch.

  One BatchNorm batch for both ('paper'), or two forward passes in turn ('reference').
  Returns (logits_l, logits_u or None, sown intermediates of each, new batch_stats).
  """
  mutable = ['batch_stats', *collect]
  run = lambda stats, x, key: state.apply_fn({'params': params, 'batch_stats': stats}, x,
                                             train=True, mutable=mutable, rngs={'dropout': key})
  if x_u is None or s.form.separate_batches:
    logits_l, upd_l = run(state.batch_stats, x_l, rng)
    if x_u is None:
      return logits_l, None, upd_l.get('intermediates', {}), {}, upd_l['batch_stats']
    logits_u, upd_u = run(upd_l['batch_stats'], x_u, jax.random.fold_in(rng, 1))
    return (logits_l, logits_u, upd_l.get('intermediates', {}), upd_u.get('intermediates', {}),
            upd_u['batch_stats'])
  n_l = x_l.shape[0]
  logits, upd = run(state.batch_stats, jnp.concatenate([x_l, x_u]), rng)
  inter = upd.get('intermediates', {})
  return (logits[:n_l], logits[n_l:], jax.tree.map(lambda a: a[:n_l], inter),
          jax.tree.map(lambda a: a[n_l:], inter), upd['batch_stats'])


def _teacher(s: StepSettings, state: TrainState, x_l: chex.Array, x_u: chex.Array,
             rng: chex.PRNGKey) -> tuple[Optional[chex.Array], chex.Array, Any]:
  """The baseline of Eq. 7 on the batches: (outputs on x_l or None, on x_u, EMA BN statistics).

  'ema': the EMA model in training mode with its own BatchNorm statistics (authors'
  code); 'cyclic': the fixed previous-cycle model w_{c-1} in inference mode.
  """
  if s.loss_teacher == 'cyclic':
    if state.teacher_variables is None:
      raise ValueError("loss_teacher='cyclic' needs the state's teacher_variables (w_{c-1}); "
                       'pass teacher_variables= to create_train_state.')
    run = lambda x: state.apply_fn(state.teacher_variables, x, train=False)
    return (run(x_l) if s.form.teacher_on_labeled else None), run(x_u), state.ema_batch_stats
  stats = state.ema_batch_stats
  outputs = []
  for i, x in enumerate([x_l, x_u] if s.form.teacher_on_labeled else [x_u]):
    logits, upd = state.apply_fn({'params': state.ema_params, 'batch_stats': stats}, x,
                                 train=True, mutable=['batch_stats'],
                                 rngs={'dropout': jax.random.fold_in(rng, i + 1)})
    outputs.append(logits)
    stats = upd['batch_stats']
  teacher_l = outputs[0] if s.form.teacher_on_labeled else None
  return teacher_l, outputs[-1], stats


def _unsupervised(s: StepSettings, params: Any, logits: tuple, inter: tuple,
                  teacher: tuple) -> chex.Array:
  """The unsupervised term of Eq. 9 in form s.loss_form (tod_jax.loss_forms)."""
  out = lambda a: tod.model_output(a, s.loss_output)
  if not s.form.consistency_head:
    return loss_forms.paper(out(logits[1]), out(teacher[1]))
  if loss_forms.CONSISTENCY_HEAD not in params:
    raise ValueError(f"tod_loss_form={s.loss_form!r} trains a consistency head, but the params "
                     'have none; build them with init_variables(..., consistency_head=True).')
  head = params[loss_forms.CONSISTENCY_HEAD]
  heads = tuple(out(loss_forms.consistency_head(head, i['features'][0])) for i in inter)
  return loss_forms.reference(tuple(map(out, logits)), heads, tuple(map(out, teacher)))


def _loss(s: StepSettings, state: TrainState, params: Any, head_params: Any, x_l: chex.Array,
          labels: chex.Array, x_u: Optional[chex.Array], teacher: tuple, rng: chex.PRNGKey,
          detach_loss_head: bool):
  """Eq. 9 (+ LL4AL's ranking loss with a loss prediction module); returns (loss, aux)."""
  with_head = head_params is not None
  collect = ('intermediates',) if with_head or s.form.consistency_head else ()
  logits_l, logits_u, inter_l, inter_u, batch_stats = _student(s, state, params, x_l, x_u,
                                                               rng, collect)
  sup = tod.supervised_loss(logits_l, labels, ignore_label=s.ignore_label)
  unsup = (_unsupervised(s, params, (logits_l, logits_u), (inter_l, inter_u), teacher)
           if x_u is not None else jnp.zeros(()))
  loss = tod.overall_loss(sup, unsup, s.tod_weight if x_u is not None else 0.0)
  ranking = jnp.zeros(())
  if with_head:  # LL4AL: rank the labeled samples' true losses.
    predicted = loss_prediction.predict(head_params, inter_l, detach_loss_head)
    true_losses = optax.softmax_cross_entropy_with_integer_labels(logits_l, labels)
    ranking = loss_prediction.ranking_loss(predicted, true_losses, s.ll4al_margin)
    loss = loss + s.ll4al_weight * ranking
  return loss, (batch_stats, logits_l, sup, unsup, ranking)


def _update_loss_head(state: TrainState, head_grads: Any) -> TrainState:
  """One optimizer step of LL4AL's module with the model's optimizer settings."""
  updates, opt_state = state.tx.update(head_grads, state.loss_head_opt_state,
                                       state.loss_head_params)
  return state.replace(loss_head_params=optax.apply_updates(state.loss_head_params, updates),
                       loss_head_opt_state=opt_state)


def _update_ema(s: StepSettings, state: TrainState, ema_batch_stats: Any,
                ema_forward: bool) -> TrainState:
  """Eq. 6 on the parameters; without an EMA forward pass the BN statistics are averaged too."""
  decay = tod.ema_decay(state.step, s.ema_decay, s.ema_warmup)
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
  s = settings
  rng = jax.random.fold_in(rng, state.step)
  aug_l, aug_u, dropout_rng = jax.random.split(rng, 3)
  segmentation = labeled['label'].ndim == 3  # Per-pixel masks; static under jit.
  x_l, labels = _prepare(s, aug_l, labeled['image'], labeled['label'], segmentation)
  x_u = _prepare(s, aug_u, unlabeled['image'], None, segmentation)[0] if s.semi else None
  teacher, ema_stats = (None, None), state.ema_batch_stats
  if s.semi:
    *teacher, ema_stats = _teacher(s, state, x_l, x_u, dropout_rng)
  with_head = state.loss_head_params is not None
  grad_fn = jax.value_and_grad(
      lambda p, h: _loss(s, state, p, h, x_l, labels, x_u, tuple(teacher), dropout_rng,
                         detach_loss_head), argnums=(0, 1), has_aux=True)
  (loss, (batch_stats, logits_l, sup, unsup, ranking)), (grads, head_grads) = grad_fn(
      state.params, state.loss_head_params)
  if with_head:
    state = _update_loss_head(state, head_grads)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  state = _update_ema(s, state, ema_stats, s.semi and s.loss_teacher == 'ema')
  counted = (jnp.ones(labels.shape, bool) if s.ignore_label is None
             else labels != s.ignore_label)
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
    raise ConfigError(f'{uneven} cannot be split evenly over the {mesh.size} devices of '
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
  return _make_step(StepSettings.create(config, dataset), mesh, indexed)


@functools.lru_cache(maxsize=16)
def _make_step(settings: StepSettings, mesh: Mesh, indexed: bool) -> Callable:
  """make_train_step's step, one per setting, so every cycle (and run) reuses its compilation."""
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  kwargs = dict(settings=settings)
  if indexed:
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
  """Mean metrics of an epoch's steps; raises NonFiniteLossError if any is not finite."""
  metrics = {k: float(v) for k, v in jax.tree.map(
      lambda *m: jnp.mean(jnp.stack(m)), *history).items()}
  if not all(math.isfinite(v) for v in metrics.values()):
    raise NonFiniteLossError(
        f'Loss is not finite at cycle {cycle}, epoch {epoch + 1} ({metrics}); lower '
        '--config.learning_rate or --config.tod_weight. The last completed cycle\'s '
        'checkpoint and labeled set are untouched.')
  return metrics


def train_cycle(state: TrainState, dataset: Dataset, labeled: np.ndarray,
                unlabeled: np.ndarray, config: ml_collections.ConfigDict,
                np_rng: np.random.Generator, key: chex.PRNGKey, *, cycle: int,
                mesh: Optional[Mesh] = None, writer: Any = None,
                on_step: Optional[Callable[[TrainState, int], None]] = None
                ) -> tuple[TrainState, dict]:
  """Trains `config.num_epochs` epochs over the labeled set, data-parallel over `mesh`.

  With a loss prediction module (LL4AL) its gradient into the model is stopped
  from epoch round(config.ll4al.detach_at * num_epochs) on (LL4AL: 120 of 200).
  Every batch has exactly `config.batch_size` samples (batches.epoch), so the step
  compiles once. A pool that fits (batches.keeps_data_on_device) is put on
  the devices once and each step receives only indices; a larger one is streamed,
  two batches ahead. Both give the same result.
  Raises NonFiniteLossError (the state passed in is then unusable: it was donated)
  as soon as an epoch's loss is not finite. `on_step(state, steps_done)`, if
  given, runs after every step (steps counted from 1 in this call); it must copy
  what it keeps, because the next step donates the state's buffers.
  """
  mesh = mesh if mesh is not None else make_mesh()
  on_device = batches.keeps_data_on_device(config, dataset)
  step_fn = make_train_step(config, dataset, mesh, indexed=on_device)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  state, key = put(state, replicated), put(key, replicated)
  pool = (put({'image': dataset.train_images, 'label': dataset.train_labels}, replicated)
          if on_device else None)
  bar = tqdm.trange(config.num_epochs, desc=f'cycle {cycle} ({len(labeled)} labeled)',
                    disable=not config.progress_bar, leave=False, dynamic_ncols=True)
  epoch_metrics, done = {}, 0
  detach_from = round(config.ll4al.detach_at * config.num_epochs)
  for epoch in bar:
    detach = state.loss_head_params is not None and epoch >= detach_from
    order, unl = batches.epoch(np_rng, labeled, unlabeled, config, dataset.train_images, sharded)
    history = []
    for batch in batches.device_batches(dataset, pool, order, unl, sharded):
      state, metrics = step_fn(state, *batch, key, detach_loss_head=detach)
      history.append(metrics)
      done += 1
      if on_step is not None:
        on_step(state, done)
    epoch_metrics = _epoch_summary(history, cycle, epoch)
    bar.set_postfix(loss=f"{epoch_metrics['loss']:.4f}", acc=f"{epoch_metrics['accuracy']:.3f}")
    if writer is not None:
      for name, value in epoch_metrics.items():
        writer.add_scalar(f'train/{name}', value, int(state.step))
  return state, epoch_metrics
