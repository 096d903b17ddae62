"""LL4AL: the ranking loss by hand, the module, and its part in the train step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import augment, datasets, loss_prediction, models, train
from tod_jax.train_state import create_optimizer, create_train_state, init_variables


def test_ranking_loss_by_hand():
  pred = jnp.array([3.0, 1.0, 2.0, 0.0])
  target = jnp.array([0.5, 2.0, 1.0, 0.1])
  # Pair (0, 3): target 0.5 > 0.1, sign +1, pred diff 3: max(0, 1 - 3) = 0.
  # Pair (1, 2): target 2 > 1, sign +1, pred diff -1: max(0, 1 + 1) = 2. Mean 1.
  chex.assert_trees_all_close(loss_prediction.ranking_loss(pred, target), 1.0)
  # Ties and smaller targets give sign -1: pair (0, 1) target 1 = 1, pred diff 0.25:
  # max(0, 0.5 + 0.25) = 0.75 with margin 0.5.
  chex.assert_trees_all_close(
      loss_prediction.ranking_loss(jnp.array([0.5, 0.25]), jnp.array([1.0, 1.0]), 0.5), 0.75)


def test_ranking_loss_gradient_only_to_predictions():
  pred, target = jnp.array([0.0, 0.3]), jnp.array([2.0, 1.0])
  g_pred, g_target = jax.grad(loss_prediction.ranking_loss, argnums=(0, 1))(pred, target)
  # One pair, sign +1, hinge active (1 - (0 - 0.3) > 0): d/dpred = (-1, +1).
  chex.assert_trees_all_close(g_pred, jnp.array([-1.0, 1.0]))
  chex.assert_trees_all_close(g_target, jnp.zeros(2))


def test_ranking_loss_rejects_odd_batches():
  with pytest.raises(ValueError, match='even'):
    loss_prediction.ranking_loss(jnp.zeros(3), jnp.zeros(3))


@pytest.fixture(scope='module')
def setup():
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape, consistency_head=True)
  head = loss_prediction.init_params(model, variables, jax.random.PRNGKey(1), ds.image_shape)
  return ds, model, variables, head


def test_module_predicts_one_loss_per_sample(setup):
  ds, model, variables, head = setup
  # Three stages of the small CNN, each GAP -> Dense 128, then Dense 1 on the 384-vector.
  assert [head[f'Dense_{i}']['kernel'].shape for i in range(4)] == [
      (32, 128), (64, 128), (128, 128), (384, 1)]
  x = augment.normalize(ds.train_images[:5], ds.mean, ds.std)
  _, state = model.apply(variables, x, mutable=['intermediates'])
  chex.assert_shape(loss_prediction.predict(head, state['intermediates']), (5,))


def _step(config, ds, model, variables, head, detach):
  config.crop_padding, config.flip = 0, False
  state = create_train_state(model, jax.tree.map(jnp.copy, variables),
                             create_optimizer(config),
                             loss_head_params=jax.tree.map(jnp.copy, head) if head else None)
  labeled = {'image': ds.train_images[:32], 'label': ds.train_labels[:32]}
  unlabeled = {'image': ds.train_images[32:48]}
  kwargs = {} if head is None else {'detach_loss_head': detach}
  return train.make_train_step(config, ds)(state, labeled, unlabeled, jax.random.PRNGKey(0),
                                           **kwargs)


def test_train_step_trains_the_module_and_detaches_it_from_the_model(setup, tiny_config):
  ds, model, variables, head = setup
  plain, _ = _step(tiny_config, ds, model, variables, None, False)
  attached, m_attached = _step(tiny_config, ds, model, variables, head, False)
  detached, m_detached = _step(tiny_config, ds, model, variables, head, True)
  assert float(m_attached['ranking_loss']) > 0.0
  chex.assert_trees_all_close(m_attached['loss'], m_attached['sup_loss']
                              + tiny_config.tod_weight * m_attached['unsup_loss']
                              + m_attached['ranking_loss'], rtol=1e-6)
  # Detached: the model gets exactly the gradient it gets without the module.
  chex.assert_trees_all_close(detached.params, plain.params, rtol=1e-6, atol=1e-7)
  assert not np.allclose(attached.params['Conv_0']['kernel'], plain.params['Conv_0']['kernel'])
  for state in (attached, detached):  # The module itself learns in both phases.
    assert not np.allclose(state.loss_head_params['Dense_3']['kernel'], head['Dense_3']['kernel'])
