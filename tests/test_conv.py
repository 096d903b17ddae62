"""tod_jax.conv: the blocked 3x3 filter gradient equals XLA's, and applies where it should."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import conv, models

# Math against NumPy/PyTorch/XLA: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')


def conv3x3(x, w):
  return conv.blocked_conv(x, w, (1, 1), ((1, 1), (1, 1)))


def _xla_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_blocked_filter_grad_by_hand():
  # One 2x2 image of ones, dy ones: dW[i, j] counts the output pixels whose (i, j) tap
  # falls inside the image: 1, 2, 1 per axis.
  x = jnp.ones((1, 2, 2, 1))
  grad = conv.blocked_filter_grad(x, jnp.ones((1, 2, 2, 1)))
  chex.assert_shape(grad, (3, 3, 1, 1))
  expected = np.outer([1., 2., 1.], [1., 2., 1.])
  np.testing.assert_array_equal(grad[..., 0, 0], expected)
  # One tap by hand: x[0, h, w] = h * 2 + w, dy = 1 at (0, 0) only: dW[i, j] = x_pad[i, j].
  x = jnp.arange(4.).reshape(1, 2, 2, 1)
  dy = jnp.zeros((1, 2, 2, 1)).at[0, 0, 0, 0].set(1.)
  np.testing.assert_array_equal(conv.blocked_filter_grad(x, dy)[..., 0, 0],
                                [[0, 0, 0], [0, 0, 1], [0, 2, 3]])


@pytest.mark.parametrize('batch,height,width,cin,cout,kernel,strides,padding', [
    (8, 5, 7, 3, 4, (3, 3), (1, 1), ((1, 1), (1, 1))),  # Eight groups of one image each.
    (6, 4, 4, 2, 5, (3, 3), (1, 1), ((1, 1), (1, 1))),  # gcd(6, 8) = 2 groups of three.
    (3, 6, 3, 4, 2, (3, 3), (1, 1), ((1, 1), (1, 1))),  # An odd batch: one group.
    (4, 8, 8, 3, 2, (3, 3), (2, 2), ((0, 1), (0, 1))),  # 'SAME' at stride 2 (the ResNet's).
    (4, 8, 6, 3, 2, (3, 3), (2, 2), ((1, 1), (1, 1))),  # PyTorch's padding at stride 2.
    (4, 8, 8, 3, 2, (1, 1), (2, 2), ((0, 0), (0, 0))),  # The 1x1 shortcut: no odd residue.
    (2, 9, 7, 2, 3, (5, 3), (3, 2), ((2, 1), (0, 2))),  # Odd sizes, strides, padding.
    (2, 6, 6, 2, 3, (2, 2), (1, 1), ((0, 0), (0, 0))),  # 'VALID', an even kernel.
])
def test_blocked_filter_grad_equals_xla(batch, height, width, cin, cout, kernel, strides,
                                        padding):
  kx, kd = jax.random.split(jax.random.PRNGKey(batch))
  x = jax.random.normal(kx, (batch, height, width, cin))
  w = jnp.zeros((*kernel, cin, cout))
  out_shape = jax.eval_shape(lambda x: conv._conv(x, w, strides, padding), x).shape
  dy = jax.random.normal(kd, out_shape)
  blocked = jax.jit(conv.blocked_filter_grad, static_argnums=(2, 3, 4))(
      x, dy, kernel, strides, padding)
  xla = jax.vjp(lambda k: jax.lax.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')), w)[1](dy)[0]
  chex.assert_trees_all_close(blocked, xla, rtol=1e-5, atol=1e-5)


def test_conv3x3_values_and_gradients_equal_xla_in_float32_and_bfloat16():
  kx, kw = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (4, 16, 16, 16))  # blocked_conv applies at any size.
  w = jax.random.normal(kw, (3, 3, 16, 8)) * 0.1
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  np.testing.assert_array_equal(conv3x3(x, w), _xla_conv(x, w))
  ours = jax.jit(jax.grad(loss(conv3x3), argnums=(0, 1)))(x, w)
  xla = jax.jit(jax.grad(loss(_xla_conv), argnums=(0, 1)))(x, w)
  chex.assert_trees_all_close(ours, xla, rtol=1e-5, atol=1e-4)
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  ours = jax.grad(lambda w: jnp.sum(conv3x3(xb, w).astype(jnp.float32)))(wb)
  xla = jax.grad(lambda w: jnp.sum(_xla_conv(xb, w).astype(jnp.float32)))(wb)
  chex.assert_type(ours, jnp.bfloat16)
  chex.assert_trees_all_close(ours.astype(jnp.float32), xla.astype(jnp.float32), rtol=2e-2)


def test_cpu_lowers_the_blocked_gradient_other_platforms_xla_convolution():
  grad = jax.jit(jax.grad(lambda w, x: conv3x3(x, w).sum()))
  traced = grad.trace(jnp.ones((3, 3, 16, 16)), jnp.ones((2, 16, 16, 16)))
  cpu, cuda = (traced.lower(lowering_platforms=(p,)).as_text() for p in ('cpu', 'cuda'))
  assert 'while' in cpu and 'convolution' not in cpu
  assert 'while' not in cuda and 'convolution' in cuda


@pytest.mark.parametrize('shape,kernel,kwargs,blocked', [
    ((2, 32, 32, 16), (3, 3, 16, 8), {}, True),
    ((2, 32, 32, 16), (3, 3, 16, 8), {'padding': 'SAME'}, True),
    ((2, 16, 16, 16), (3, 3, 16, 8), {}, False),    # Below MIN_PIXELS.
    ((2, 32, 32, 3), (3, 3, 3, 8), {}, False),      # Below MIN_CHANNELS.
    ((2, 32, 32, 16), (3, 3, 16, 8), {'window_strides': (2, 2), 'padding': 'SAME'}, True),
    ((2, 32, 32, 16), (1, 1, 16, 8), {'window_strides': (2, 2), 'padding': 'VALID'}, True),
    ((2, 32, 32, 16), (3, 3, 8, 8), {'feature_group_count': 2}, False),
    ((2, 32, 32, 16), (3, 3, 16, 8), {'rhs_dilation': (2, 2), 'padding': ((2, 2), (2, 2))}, False),
])
def test_conv_general_dilated_blocks_only_large_undilated_convolutions(shape, kernel, kwargs,
                                                                       blocked):
  args = {'window_strides': (1, 1), 'padding': ((1, 1), (1, 1)),
          'dimension_numbers': ('NHWC', 'HWIO', 'NHWC'), **kwargs}
  x, w = jnp.ones(shape), jnp.ones(kernel)
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(x, w, **args))(x, w))
  assert ('custom_vjp_call' in jaxpr) == blocked
  np.testing.assert_array_equal(conv.conv_general_dilated(x, w, **args),
                                jax.lax.conv_general_dilated(x, w, **args))


def test_resnet_gradients_equal_those_of_plain_flax_convolutions(monkeypatch):
  model = models.ResNet(10, stage_sizes=(1,), widths=(16,))  # ResNet-18's stem and one block.
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  labels = jnp.arange(4)

  def grads():
    def loss(params):
      logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                              mutable=['batch_stats'])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
    return jax.jit(jax.grad(loss))(variables['params'])

  ours = grads()
  jaxpr = str(jax.make_jaxpr(lambda x: model.apply(variables, x))(x))
  assert 'custom_vjp_call' in jaxpr  # The first stage (32x32x16) is blocked.
  monkeypatch.setattr(conv, 'Conv', nn.Conv)
  plain = grads()
  assert 'custom_vjp_call' not in str(jax.make_jaxpr(lambda x: model.apply(variables, x))(x))
  chex.assert_trees_all_equal_structs(ours, plain)
  chex.assert_trees_all_close(ours, plain, rtol=1e-4, atol=1e-5)
