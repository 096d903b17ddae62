"""A drop-in `lax.conv_general_dilated` whose filter gradient is fast on CPU.

XLA:CPU computes the filter gradient of ResNet-18's 32x32 convolutions several times
slower than oneDNN does (benchmarks/conv_benchmark.py; docs/results.md, "Performance"), and that
gradient held tod_jax's train step below PyTorch's on CPU. Here, for the NHWC convolutions
without dilation whose input has at least MIN_PIXELS pixels and MIN_CHANNELS
channels, the filter gradient is one matrix product per few images; for stride 1:

  dW[i, j] = sum_{b,h,w} x_pad[b, h + i, w + j]^T dy[b, h, w]
           = block (j, i) of  X^T Y,  X[(b, r, w), (j, c)] = x_pad[b, r, w + j, c],
                                      Y[(b, r, w), (i, d)] = dy[b, r - i, w, d] (0 outside),

summed over a loop of batch chunks small enough to stay in cache (stride s: one
product per kernel-row residue mod s). The batch is first split into groups (a
batch dimension of the product), IMAGES_PER_DEVICE per device, so a batch
sharded over the devices stays sharded and is reduced once, after the loop.
Every other convolution, every other platform and the forward and
input-gradient passes are XLA's own (`lax.platform_dependent` picks at lowering).
"""

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Input pixels (H x W) from which the blocked gradient wins: 32 x 32 with XLA's Eigen kernels
# (devices.py; 16 x 16 with YNNPACK's), measured on 2 CPU devices, docs/results.md, "Performance".
MIN_PIXELS = 1024
MIN_CHANNELS = 16  # Input channels from which it wins (not the 3-channel stem).
IMAGES_PER_DEVICE = 2  # Images per device per loop step (measured best on 1 and 2 CPU devices).
_NHWC = ('NHWC', 'HWIO', 'NHWC')
Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: chex.Array, w: chex.Array, strides: tuple[int, int], padding: Padding) -> chex.Array:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def blocked_filter_grad(x: chex.Array, dy: chex.Array, kernel_size: tuple[int, int] = (3, 3),
                        strides: tuple[int, int] = (1, 1),
                        padding: Padding = ((1, 1), (1, 1))) -> chex.Array:
  """The gradient [kh, kw, C, D] of sum(dy * conv(x, w)) w.r.t. w, as blocked matmuls.

  dW[i, j] = sum_{b,h,w} x_pad[b, s*h + i, s*w + j]^T dy[b, h, w]. Kernel rows i are taken
  by their residue m = i mod s: rows r = s*q + m of x_pad against dy shifted down by
  (i - m) / s rows, one product per residue for all its taps and all kernel columns.

  Args:
    x: the convolution's input [B, H, W, C]; dy: the output's cotangent [B, H', W', D];
    kernel_size, strides, padding: the convolution's (explicit (low, high) padding).
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  b, _, _, c = x.shape
  _, ho, wo, d = dy.shape
  # Groups: a batch dimension of the product, a multiple of the device count (no resharding).
  groups = math.gcd(b, IMAGES_PER_DEVICE * jax.device_count())
  xs = x.reshape(groups, b // groups, *x.shape[1:])
  ds = dy.reshape(groups, b // groups, *dy.shape[1:])
  residues = [m for m in range(sh) if m < kh]  # Kernel rows m, m + sh, ... share a product.
  taps = {m: len(range(m, kh, sh)) for m in residues}

  def chunk(t, acc):
    xt = jnp.pad(lax.dynamic_index_in_dim(xs, t, 1, keepdims=False), ((0, 0), *padding, (0, 0)))
    dt = lax.dynamic_index_in_dim(ds, t, 1, keepdims=False)
    out = []
    for m, total in zip(residues, acc):
      rows = xt[:, m::sh][:, :ho + taps[m] - 1]
      cols = jnp.stack([rows[:, :, j:j + sw * (wo - 1) + 1:sw] for j in range(kw)], -2)
      shifted = jnp.stack([jnp.pad(dt, ((0, 0), (n, taps[m] - 1 - n), (0, 0), (0, 0)))
                           for n in range(taps[m])], -2)
      out.append(total + lax.dot_general(
          cols.reshape(groups, -1, kw * c), shifted.reshape(groups, -1, taps[m] * d),
          (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32))
    return tuple(out)

  init = tuple(jnp.zeros((groups, kw * c, taps[m] * d), jnp.float32) for m in residues)
  sums = lax.fori_loop(0, b // groups, chunk, init)
  by_row = {}
  for m, total in zip(residues, sums):
    blocks = total.sum(0).reshape(kw, c, taps[m], d)
    for n in range(taps[m]):
      by_row[m + sh * n] = blocks[:, :, n]
  return jnp.stack([by_row[i] for i in range(kh)]).astype(x.dtype)


def _xla_filter_grad(x, dy, w, strides, padding):
  return jax.vjp(lambda k: _conv(x, k, strides, padding), w)[1](dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def blocked_conv(x: chex.Array, w: chex.Array, strides: tuple[int, int],
                 padding: Padding) -> chex.Array:
  """NHWC/HWIO convolution (explicit padding, no dilation), filter gradient blocked on CPU."""
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _bwd(strides, padding, residuals, dy):
  x, w = residuals
  dx = jax.vjp(lambda z: _conv(z, w, strides, padding), x)[1](dy)[0]
  blocked = lambda x, dy, w: blocked_filter_grad(x, dy, w.shape[:2], strides, padding)
  dw = lax.platform_dependent(x, dy, w, cpu=blocked,
                              default=lambda x, dy, w: _xla_filter_grad(x, dy, w, strides, padding))
  return dx, dw.astype(w.dtype)


blocked_conv.defvjp(_fwd, _bwd)


def _blocked_padding(lhs: chex.Array, rhs: chex.Array, window_strides: Any, padding: Any,
                     lhs_dilation: Any, rhs_dilation: Any, dimension_numbers: Any,
                     feature_group_count: int, batch_group_count: int) -> Padding | None:
  """The explicit padding if the call is a conv for the blocked filter gradient, else None."""
  if lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return None
  if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
    return None
  numbers = lambda spec: lax.conv_dimension_numbers(lhs.shape, rhs.shape, spec)
  if dimension_numbers is None or numbers(dimension_numbers) != numbers(_NHWC):
    return None
  if lhs.shape[1] * lhs.shape[2] < MIN_PIXELS or lhs.shape[3] < MIN_CHANNELS:
    return None
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_general_dilated(lhs: chex.Array, rhs: chex.Array, window_strides, padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> chex.Array:
  """`lax.conv_general_dilated`, with blocked_conv where it applies (for nn.Conv's
  `conv_general_dilated=`); same values, a differently summed filter gradient."""
  blocked = precision is None and preferred_element_type is None and _blocked_padding(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count)
  if blocked:
    return blocked_conv(lhs, rhs, tuple(window_strides), blocked)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


# nn.Conv with the blocked filter gradient where it applies (same params, same outputs).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
