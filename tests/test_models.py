"""Model shapes, parameter counts and sown features."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import models


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_cifar_resnet18_shapes_and_parameter_count():
  model = models.create_model('resnet18', 10)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
  # The CIFAR ResNet-18 of the reference code has 11,173,962 parameters.
  assert _param_count(variables['params']) == 11_173_962
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape)), variables)
  chex.assert_shape(out, (2, 10))
  assert out.dtype == jnp.float32


def test_imagenet_resnet18_downsamples_224():
  model = models.create_model('resnet18_imagenet', 102)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  (out, inter) = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((1, 224, 224, 3)), mutable=['intermediates']), variables)
  chex.assert_shape(out, (1, 102))
  chex.assert_shape(inter['intermediates']['stage4'][0], (1, 7, 7, 512))


def test_small_cnn_features_and_batch_stats_update():
  model = models.create_model('small_cnn', 10, dropout_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                              rngs={'dropout': jax.random.PRNGKey(2)})
  chex.assert_shape(logits, (4, 10))
  chex.assert_shape(state['intermediates']['features'][0], (4, 128))
  with pytest.raises(AssertionError):  # Training mode moved the running statistics.
    chex.assert_trees_all_close(state['batch_stats'], variables['batch_stats'])
  # Inference is deterministic (dropout off, running statistics).
  chex.assert_trees_all_equal(model.apply(variables, x), model.apply(variables, x))


def test_unknown_model_names_the_choices():
  with pytest.raises(ValueError, match="Unknown model 'vgg'.*resnet18"):
    models.create_model('vgg', 10)


def test_dropout_switch_in_inference_mode():
  """dropout=True: stochastic passes with BatchNorm running statistics; default: deterministic."""
  model = models.create_model('small_cnn', 10, dropout_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  plain = model.apply(variables, x)
  np.testing.assert_array_equal(plain, model.apply(variables, x, train=False))
  a = model.apply(variables, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(2)})
  b = model.apply(variables, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(3)})
  assert not np.allclose(a, b) and not np.allclose(a, plain)
  # No 'batch_stats' update is requested or needed: BatchNorm is in inference mode.
  none = models.create_model('small_cnn', 10, dropout_rate=0.0)
  np.testing.assert_array_equal(
      none.apply(variables, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(2)}), plain)


def test_bfloat16_compute_keeps_float32_params_and_logits_close_to_float32():
  """Mixed precision: same float32 variables; bf16 activations; logits within a loose bound."""
  f32 = models.create_model('small_cnn', 10)
  bf16 = models.create_model('small_cnn', 10, dtype='bfloat16')
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1))
  variables = jax.jit(bf16.init)(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal_dtypes(variables, jax.tree.map(
      lambda a: jnp.zeros(a.shape, jnp.float32), variables))
  logits16, state = bf16.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'])
  assert logits16.dtype == jnp.float32  # Cast back for the loss and softmax.
  assert state['intermediates']['features'][0].dtype == jnp.bfloat16
  chex.assert_trees_all_equal_dtypes(state['batch_stats'], variables['batch_stats'])
  logits32 = f32.apply(variables, x, train=False)
  logits16 = bf16.apply(variables, x, train=False)
  # bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%) through 4 layers.
  scale = float(jnp.max(jnp.abs(logits32)))
  assert float(jnp.max(jnp.abs(logits16 - logits32))) <= 0.05 * scale
  assert not np.array_equal(np.asarray(logits16), np.asarray(logits32))  # bf16 really ran.
