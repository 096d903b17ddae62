"""DRN-D-22: output shape at 688x688, the published parameter count, sown features, tiny DRN."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import drn, models


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _drn_d_22_backbone_params():
  """drn_d_22 counted from its published plan (PyTorch counts BN weight and bias)."""
  conv = lambda k, c_in, c_out: k * k * c_in * c_out  # Bias-free convolutions.
  bn = lambda c: 2 * c
  channels, layers = (16, 32, 64, 128, 256, 512, 512, 512), (1, 1, 2, 2, 2, 2, 1, 1)
  total, c_in = conv(7, 3, 16) + bn(16), 16  # Stem: 7x7 conv, 16 channels.
  for level, (c, units) in enumerate(zip(channels, layers)):
    for _ in range(units):
      if level in (2, 3, 4, 5):  # Basic blocks, with a 1x1 projection when channels change.
        total += conv(3, c_in, c) + bn(c) + conv(3, c, c) + bn(c)
        total += conv(1, c_in, c) + bn(c) if c_in != c else 0
      else:  # Levels 1-2 and 7-8: conv-BN-ReLU, no residual.
        total += conv(3, c_in, c) + bn(c)
      c_in = c
  return total


def test_drn_d_22_parameter_count_matches_published_model():
  backbone = _drn_d_22_backbone_params()
  # The ImageNet classifier (1x1 conv 512 -> 1000 with bias) is the published ~16.4M model.
  assert backbone + 512 * 1000 + 1000 == pytest.approx(16.4e6, rel=0.005)
  model = models.create_model('drn_d_22', 19)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, 64, 64, 3))))
  # Segmentation: the backbone and a 1x1 conv 512 -> 19 with bias; upsampling has none.
  assert _param_count(variables['params']) == backbone + 512 * 19 + 19
  assert _param_count(variables['params']) == pytest.approx(15.9e6, rel=0.005)


def test_drn_d_22_at_688_gives_19_class_logits_at_input_size():
  model = models.create_model('drn_d_22', 19)
  x = jnp.zeros((2, 688, 688, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x[:1]))
  out, state = jax.eval_shape(lambda v: model.apply(v, x, mutable=['intermediates']), variables)
  chex.assert_shape(out, (2, 688, 688, 19))
  assert out.dtype == jnp.float32
  inter = state['intermediates']
  chex.assert_shape(inter['features'][0], (2, 512))
  # Output stride 8 from level 4 on: levels 5-8 keep 86 = 688 / 8 through dilation.
  for level, (size, width) in enumerate([(688, 16), (344, 32), (172, 64), (86, 128), (86, 256),
                                         (86, 512), (86, 512), (86, 512)], start=1):
    chex.assert_shape(inter[f'stage{level}'][0], (2, size, size, width))


def test_dilations_are_those_of_the_d_variant():
  variables = jax.eval_shape(lambda: models.create_model('drn_d_22', 19).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  params = variables['params']
  assert 'batch_stats' in variables
  # 1 stem + levels 1-2 conv + 4 levels of blocks + levels 7-8 conv + the 1x1 classifier.
  assert sum(k.startswith('DilatedBasicBlock') for k in params) == 2 + 2 + 2 + 2
  assert sum(k.startswith('Conv') for k in params) == 1 + 2 + 2 + 1
  assert drn.DRNSeg.dilations == (1, 1, 1, 1, 2, 4, 2, 1)
  assert drn.DRNSeg.strides == (1, 2, 2, 2, 1, 1, 1, 1)


def test_tiny_drn_runs_trains_batch_stats_and_is_deterministic_in_inference():
  model = models.create_model('drn_tiny', 5, dropout_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)  # jit: eager is 3x slower.
  logits, state = jax.jit(lambda v: model.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates'],
      rngs={'dropout': jax.random.PRNGKey(2)}))(variables)
  chex.assert_shape(logits, (3, 32, 32, 5))
  chex.assert_shape(state['intermediates']['features'][0], (3, 32))
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(state['batch_stats'], variables['batch_stats'])
  infer = jax.jit(model.apply)
  chex.assert_trees_all_equal(infer(variables, x), infer(variables, x))


def test_bilinear_upsampling_handles_sizes_not_divisible_by_the_stride():
  model = models.create_model('drn_tiny', 4)
  x = jnp.zeros((1, 30, 22, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  chex.assert_shape(jax.eval_shape(lambda v: model.apply(v, x), variables), (1, 30, 22, 4))
