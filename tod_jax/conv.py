"""A drop-in `lax.conv_general_dilated` whose 3x3 filter gradient is fast on CPU.

XLA:CPU computes the filter gradient of a 3x3 convolution about 5x slower than
oneDNN does (benchmarks/conv_benchmark.py), and that gradient held tod_jax's
train step below PyTorch's on CPU. Here, for the 3x3, stride-1, pad-1 NHWC
convolutions of at least MIN_PIXELS output pixels, the filter gradient is one
matrix product per few images:

  dW[i, j] = sum_{b,h,w} x_pad[b, h + i, w + j]^T dy[b, h, w]
           = block (j, i) of  X^T Y,  X[(b, r, w), (j, c)] = x_pad[b, r, w + j, c],
                                      Y[(b, r, w), (i, d)] = dy[b, r - i, w, d] (0 outside),

summed over a loop of batch chunks small enough to stay in cache. The batch is
first split into GROUPS groups (a batch dimension of the product), so a batch
sharded over up to GROUPS devices is reduced once, after the loop. Every other
convolution, every other platform and the forward and input-gradient passes are
XLA's own (`lax.platform_dependent` picks at lowering).
"""

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

MIN_PIXELS = 256  # Output pixels (H x W) from which the blocked gradient wins (16 x 16 on).
MIN_CHANNELS = 16  # Input channels from which it wins (not the 3-channel stem).
GROUPS = 8  # Batch groups: a multiple of every device count up to 8, so no resharding.
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv3x3(x: chex.Array, w: chex.Array) -> chex.Array:
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)


def blocked_filter_grad(x: chex.Array, dy: chex.Array) -> chex.Array:
  """The gradient [3, 3, C, D] of sum(dy * conv3x3(x, w)) w.r.t. w, as blocked matmuls.

  Args:
    x: the convolution's input [B, H, W, C]; dy: the output's cotangent [B, H, W, D].
  """
  b, h, w, c = x.shape
  d = dy.shape[-1]
  groups = math.gcd(b, GROUPS)
  xs = x.reshape(groups, b // groups, h, w, c)
  ds = dy.reshape(groups, b // groups, h, w, d)

  def chunk(t, acc):
    xt = lax.dynamic_index_in_dim(xs, t, 1, keepdims=False)
    dt = lax.dynamic_index_in_dim(ds, t, 1, keepdims=False)
    xp = jnp.pad(xt, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.stack([xp[:, :, j:j + w] for j in range(3)], -2).reshape(groups, -1, 3 * c)
    rows = jnp.stack([jnp.pad(dt, ((0, 0), (i, 2 - i), (0, 0), (0, 0))) for i in range(3)],
                     -2).reshape(groups, -1, 3 * d)
    return acc + lax.dot_general(cols, rows, (((1,), (1,)), ((0,), (0,))),
                                 preferred_element_type=jnp.float32)

  total = lax.fori_loop(0, b // groups, chunk, jnp.zeros((groups, 3 * c, 3 * d), jnp.float32))
  return total.sum(0).reshape(3, c, 3, d).transpose(2, 0, 1, 3).astype(x.dtype)


def _xla_filter_grad(x: chex.Array, dy: chex.Array, w: chex.Array) -> chex.Array:
  return jax.vjp(lambda k: _conv3x3(x, k), w)[1](dy)[0]


@jax.custom_vjp
def conv3x3(x: chex.Array, w: chex.Array) -> chex.Array:
  """3x3, stride 1, pad 1 NHWC/HWIO convolution; its filter gradient is blocked on CPU."""
  return _conv3x3(x, w)


def _fwd(x, w):
  return _conv3x3(x, w), (x, w)


def _bwd(residuals, dy):
  x, w = residuals
  dx = jax.vjp(lambda z: _conv3x3(z, w), x)[1](dy)[0]
  dw = lax.platform_dependent(x, dy, w, cpu=lambda x, dy, w: blocked_filter_grad(x, dy),
                              default=_xla_filter_grad)
  return dx, dw.astype(w.dtype)


conv3x3.defvjp(_fwd, _bwd)


def _is_blocked(lhs: chex.Array, rhs: chex.Array, window_strides: Any, padding: Any,
                lhs_dilation: Any, rhs_dilation: Any, dimension_numbers: Any,
                feature_group_count: int, batch_group_count: int) -> bool:
  """Whether the call is a conv3x3 large enough for the blocked filter gradient."""
  if lhs.ndim != 4 or rhs.shape[:2] != (3, 3) or feature_group_count != 1:
    return False
  if batch_group_count != 1 or tuple(window_strides) != (1, 1):
    return False
  if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
    return False
  if padding != 'SAME' and tuple(map(tuple, padding)) != ((1, 1), (1, 1)):
    return False
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  if dimension_numbers is None or (
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != numbers):
    return False
  return lhs.shape[1] * lhs.shape[2] >= MIN_PIXELS and lhs.shape[3] >= MIN_CHANNELS


def conv_general_dilated(lhs: chex.Array, rhs: chex.Array, window_strides, padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> chex.Array:
  """`lax.conv_general_dilated`, with conv3x3 where it applies (for nn.Conv's
  `conv_general_dilated=`); same values, a differently summed filter gradient."""
  if precision is None and preferred_element_type is None and _is_blocked(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count):
    return conv3x3(lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


# nn.Conv with the blocked filter gradient where it applies (same params, same outputs).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
