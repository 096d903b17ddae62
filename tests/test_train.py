"""The train step: loss goes down, EMA follows Eq. 6, semi=False drops Eq. 7."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import augment, caches, datasets, loss_forms, models, tod, train
from tod_jax.train_state import create_optimizer, create_train_state, init_variables, lr_decay_step

# Math against NumPy/PyTorch/XLA: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')


@pytest.fixture
def setup(tiny_config):
  tiny_config.precision.train = 'highest'  # The steps below are checked against hand math.
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape,
                             loss_forms.uses_consistency_head(tiny_config))
  labeled = {'image': ds.train_images[:32], 'label': ds.train_labels[:32]}
  unlabeled = {'image': ds.train_images[32:48]}
  return tiny_config, ds, model, variables, labeled, unlabeled


def _state(config, model, variables, steps=100):
  return create_train_state(model, jax.tree.map(jnp.copy, variables),
                            create_optimizer(config), decay_step=lr_decay_step(config, steps))


def test_train_step_lowers_the_loss_on_a_fixed_batch(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  step = train.make_train_step(config, ds)
  state = _state(config, model, variables)
  losses = []
  for _ in range(15):
    state, metrics = step(state, labeled, unlabeled, jax.random.PRNGKey(0))
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 15
  assert float(metrics['unsup_loss']) > 0.0


def test_ema_params_follow_eq6_with_warmup(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  step = train.make_train_step(config, ds)
  state = _state(config, model, variables)
  ema_before = jax.tree.map(np.asarray, state.ema_params)
  state, _ = step(state, labeled, unlabeled, jax.random.PRNGKey(0))
  # First step: decay = min(1 - 1/2, 0.999) = 0.5.
  expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * np.asarray(p), ema_before, state.params)
  chex.assert_trees_all_close(state.ema_params, expected, rtol=1e-6, atol=1e-7)


def test_semi_false_has_no_unsupervised_term_and_ignores_unlabeled(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  config.semi = False
  step = train.make_train_step(config, ds)
  s1, m1 = step(_state(config, model, variables), labeled, {}, jax.random.PRNGKey(0))
  s2, m2 = step(_state(config, model, variables), labeled, unlabeled, jax.random.PRNGKey(0))
  assert float(m1['unsup_loss']) == 0.0
  chex.assert_trees_all_close(m1['loss'], m1['sup_loss'])
  chex.assert_trees_all_close(s1.params, s2.params)


def test_loss_matches_eq9_from_its_terms(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  config.tod_weight = 0.5
  _, m = train.make_train_step(config, ds)(_state(config, model, variables), labeled, unlabeled,
                                           jax.random.PRNGKey(0))
  chex.assert_trees_all_close(m['loss'], m['sup_loss'] + 0.5 * m['unsup_loss'], rtol=1e-6)


def test_gradient_is_that_of_ce_plus_lambda_tod(setup):
  """'paper' form: the update equals one SGD step on Eq. 9 computed by hand (no momentum yet)."""
  config, ds, model, variables, labeled, unlabeled = setup
  config.crop_padding, config.flip, config.weight_decay = 0, False, 0.0
  config.tod_loss_form = 'paper'
  state = _state(config, model, variables)
  new_state, _ = train.make_train_step(config, ds)(
      _state(config, model, variables), labeled, unlabeled, jax.random.PRNGKey(0))
  prep = lambda im: augment.normalize(jnp.asarray(im), ds.mean, ds.std)
  x = jnp.concatenate([prep(labeled['image']), prep(unlabeled['image'])])
  ema_logits = model.apply(variables, x[32:], train=True, mutable=['batch_stats'])[0]

  def loss(params):
    logits = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])[0]
    return (tod.supervised_loss(logits[:32], labeled['label'])
            + config.tod_weight * jnp.mean(jnp.sum((logits[32:] - ema_logits) ** 2, -1)))

  grads = jax.jit(jax.grad(loss))(state.params)  # jit: eager op-by-op is 5x slower.
  expected = jax.tree.map(lambda p, g: p - config.learning_rate * g, state.params, grads)
  chex.assert_trees_all_close(new_state.params, expected, rtol=1e-4, atol=1e-6)


def test_reference_form_matches_the_authors_loss_by_hand(setup):
  """'reference': CE + w * [mse(main, head) + mse(head, EMA main)] on the labeled and the
  unlabeled batch, two forward passes in turn; one SGD step on it computed by hand."""
  config, ds, model, variables, labeled, unlabeled = setup
  config.crop_padding, config.flip, config.weight_decay = 0, False, 0.0
  config.tod_loss_form, config.tod_weight = 'reference', 0.5
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape, consistency_head=True)
  assert set(variables['params']['consistency_head']) == {'kernel', 'bias'}
  new_state, m = train.make_train_step(config, ds)(
      _state(config, model, variables), labeled, unlabeled, jax.random.PRNGKey(0))
  prep = lambda im: augment.normalize(jnp.asarray(im), ds.mean, ds.std)
  x_l, x_u = prep(labeled['image']), prep(unlabeled['image'])
  ema_l, ema_stats = model.apply(variables, x_l, train=True, mutable=['batch_stats'])
  ema_u = model.apply({'params': variables['params'], **ema_stats}, x_u, train=True,
                      mutable=['batch_stats'])[0]
  mse = lambda a, b: jnp.mean((a - b) ** 2)

  def loss(params):
    def forward(stats, x):
      out, upd = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                             mutable=['batch_stats', 'intermediates'])
      head = params['consistency_head']
      return out, upd['intermediates']['features'][0] @ head['kernel'] + head['bias'], upd
    main_l, head_l, upd = forward(variables['batch_stats'], x_l)
    main_u, head_u, _ = forward(upd['batch_stats'], x_u)
    unsup = (mse(main_l, head_l) + mse(head_l, ema_l) + mse(main_u, head_u)
             + mse(head_u, ema_u))
    return tod.supervised_loss(main_l, labeled['label']) + 0.5 * unsup, unsup

  (expected_loss, unsup), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables['params'])
  chex.assert_trees_all_close(m['loss'], expected_loss, rtol=1e-5)
  chex.assert_trees_all_close(m['unsup_loss'], unsup, rtol=1e-5)
  expected = jax.tree.map(lambda p, g: p - config.learning_rate * g, variables['params'], grads)
  chex.assert_trees_all_close(new_state.params, expected, rtol=1e-4, atol=1e-6)


def test_unknown_loss_form_is_refused(setup):
  config, ds, *_ = setup
  config.tod_loss_form = 'both'
  with pytest.raises(ValueError, match='tod_loss_form'):
    train.make_train_step(config, ds)


def test_step_compiles_once_per_run(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  traced = []
  original = train.train_step

  def counting_step(*args, **kwargs):
    traced.append(1)
    return original(*args, **kwargs)

  train.train_step = counting_step
  try:
    with caches.scoped():
      for steps in (100, 37):  # Two cycles: another state, optimizer state and lr boundary.
        step = train.make_train_step(config, ds)
        state = _state(config, model, variables, steps)
        for i in range(3):
          state, _ = step(state, labeled, unlabeled, jax.random.PRNGKey(i))
  finally:
    train.train_step = original
  assert len(traced) == 1


def test_lr_schedule_decays_after_80_percent(tiny_config):
  tiny_config.weight_decay, tiny_config.momentum = 0.0, 0.0
  model = models.create_model('small_cnn', 10)
  params = {'w': jnp.zeros(())}
  for steps, boundary in ((10, 8), (7, 5)):  # int(0.8 * steps); one optimizer for both.
    state = create_train_state(model, {'params': params, 'batch_stats': {}},
                               create_optimizer(tiny_config),
                               decay_step=lr_decay_step(tiny_config, steps))
    opt_state, lrs = state.opt_state, []
    for _ in range(steps):
      u, opt_state = state.tx.update({'w': jnp.ones(())}, opt_state, params)
      lrs.append(-float(u['w']))
    np.testing.assert_allclose(lrs, [0.05] * boundary + [0.005] * (steps - boundary), rtol=1e-6)
  assert create_optimizer(tiny_config) is create_optimizer(tiny_config)


def test_weight_decay_is_added_to_the_gradient(tiny_config):
  tiny_config.momentum = 0.0
  tx = create_optimizer(tiny_config)
  params = {'w': jnp.array(2.0)}
  u, _ = tx.update({'w': jnp.array(1.0)}, tx.init(params), params)
  chex.assert_trees_all_close(u['w'], -0.05 * (1.0 + 5e-4 * 2.0))


def test_train_cycle_calls_on_step_after_every_step(tiny_config):
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  state = _state(tiny_config, model, init_variables(model, jax.random.PRNGKey(0), ds.image_shape,
                                                    True))
  seen = []
  labeled = np.arange(40)  # 2 steps per epoch at batch 32; 2 epochs.
  inputs = train.CycleInputs(ds, labeled, np.arange(40, 100), np.random.default_rng(0),
                             jax.random.PRNGKey(0), cycle=1)
  train.train_cycle(state, inputs, tiny_config,
                    on_step=lambda s, done: seen.append((done, int(s.step))))
  assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_cyclic_teacher_is_the_fixed_previous_model(setup):
  """loss_teacher='cyclic': Eq. 7 against w_{c-1} in inference mode; w_{c-1} never changes."""
  config, ds, model, variables, labeled, unlabeled = setup
  config.loss_teacher, config.crop_padding, config.flip = 'cyclic', 0, False
  config.tod_loss_form = 'paper'
  previous = init_variables(model, jax.random.PRNGKey(1), ds.image_shape)
  state = create_train_state(model, jax.tree.map(jnp.copy, variables),
                             create_optimizer(config), teacher_variables=previous)
  step = train.make_train_step(config, ds)
  new_state, m = step(state, labeled, unlabeled, jax.random.PRNGKey(0))
  prep = lambda im: augment.normalize(jnp.asarray(im), ds.mean, ds.std)
  x = jnp.concatenate([prep(labeled['image']), prep(unlabeled['image'])])
  logits = model.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  base = model.apply(previous, x[32:], train=False)
  chex.assert_trees_all_close(m['unsup_loss'], jnp.mean(jnp.sum((logits[32:] - base) ** 2, -1)),
                              rtol=1e-5)
  new_state, _ = step(new_state, labeled, unlabeled, jax.random.PRNGKey(1))
  chex.assert_trees_all_close(new_state.teacher_variables, previous)
  # The EMA model is still kept (for emaod and the EMA accuracy): first step decay 0.5.
  assert not np.allclose(new_state.ema_params['Dense_0']['kernel'],
                         variables['params']['Dense_0']['kernel'])


def test_cyclic_teacher_without_its_variables_fails_clearly(setup):
  config, ds, model, variables, labeled, unlabeled = setup
  config.loss_teacher = 'cyclic'
  with pytest.raises(ValueError, match='teacher_variables'):
    train.make_train_step(config, ds)(_state(config, model, variables), labeled, unlabeled,
                                      jax.random.PRNGKey(0))


def test_pool_on_device_and_streamed_batches_train_identically(tiny_config):
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape, True)
  results = []
  for where in ('always', 'never'):
    tiny_config.data_on_device, tiny_config.num_epochs = where, 1
    state = _state(tiny_config, model, variables)
    inputs = train.CycleInputs(ds, np.arange(64), np.arange(64, 300), np.random.default_rng(0),
                               jax.random.PRNGKey(0), cycle=1)
    state, metrics = train.train_cycle(state, inputs, tiny_config)
    results.append(({'params': state.params, 'ema_params': state.ema_params,
                     'batch_stats': state.batch_stats}, metrics))
  assert int(state.step) == 2
  chex.assert_trees_all_close(results[0], results[1])


def _trained(config, labeled, on_step=None, stop_at=()):
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  state = _state(config, model, init_variables(model, jax.random.PRNGKey(0), ds.image_shape,
                                               True))
  inputs = train.CycleInputs(ds, labeled, np.arange(300, 700), np.random.default_rng(0),
                             jax.random.PRNGKey(0), cycle=1)
  return train.train_cycle(state, inputs, config, on_step=on_step, stop_at=stop_at)


def test_steps_scanned_in_one_dispatch_equal_single_steps(tiny_config):
  """steps_per_dispatch=4 (a lax.scan over blocks of 4, the epoch's rest one at a time) trains
  to the state and epoch metrics that one step per dispatch gives, up to rounding."""
  tiny_config.data_on_device = 'always'
  results = []
  for per_dispatch in (1, 4):
    tiny_config.steps_per_dispatch = per_dispatch
    seen = []
    state, metrics = _trained(tiny_config, np.arange(200),  # 7 steps an epoch, 2 epochs.
                              lambda s, done: seen.append((done, int(s.step))), stop_at=(2,))
    results.append(({'params': state.params, 'ema_params': state.ema_params,
                     'batch_stats': state.batch_stats,
                     'ema_batch_stats': state.ema_batch_stats}, metrics))
    assert int(state.step) == 14
  assert seen == [(1, 1), (2, 2), (6, 6), (7, 7), (11, 11), (12, 12), (13, 13), (14, 14)]
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_the_scanned_block_compiles_once_for_every_epoch_length(tiny_config):
  tiny_config.data_on_device, tiny_config.steps_per_dispatch = 'always', 4
  with caches.scoped():
    _trained(tiny_config, np.arange(200))  # 7 steps an epoch.
    _trained(tiny_config, np.arange(270))  # 9 steps an epoch.
    ds = datasets.load_digits()
    block = train.make_train_step(tiny_config, ds, indexed=True, scanned=True)
    assert block.jitted._cache_size() == 1  # pylint: disable=protected-access
