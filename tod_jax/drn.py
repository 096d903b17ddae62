"""Dilated Residual Network, D variant (Yu, Koltun, Funkhouser, CVPR 2017), for segmentation.

DRN-D keeps the resolution at 1/8 after level 4 and grows the receptive field by
dilation instead: levels 1-2 and 7-8 are plain conv-BN-ReLU layers (no residual,
which removes the gridding artifacts of dilated residual blocks), levels 3-6 are
ResNet basic blocks, levels 5 and 6 use dilation 2 and 4 at stride 1, levels 7
and 8 dilation 2 and 1. The segmentation head is a 1x1 convolution to the
classes and bilinear upsampling back to the input size (the reference code uses
a fixed bilinear transposed convolution; `jax.image.resize` is the same
interpolation without the frozen weights).

Same conventions as `models.py`: NHWC float input, BatchNorm statistics in
'batch_stats', float32 logits `[batch, H, W, classes]`, the globally pooled
last-level features `[batch, channels]` sown as 'features' and each level's
output as 'stage1'..'stage8' in 'intermediates', and `dropout=True` to turn
dropout (before the 1x1 classifier) on at inference for MC dropout.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tod_jax import conv as conv_lib

ModuleDef = Any


def _conv(conv: ModuleDef, filters: int, kernel: int, stride: int = 1, dilation: int = 1):
  """PyTorch-style symmetric padding, so output sizes match the reference model."""
  pad = dilation * (kernel - 1) // 2
  return conv(filters, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
              kernel_dilation=(dilation, dilation))


class DilatedBasicBlock(nn.Module):
  """Two 3x3 convs (dilations `dilation`) with an identity or 1x1 projection shortcut."""
  filters: int
  stride: int
  dilation: tuple[int, int]
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    y = _conv(self.conv, self.filters, 3, self.stride, self.dilation[0])(x)
    y = nn.relu(self.norm()(y))
    y = _conv(self.conv, self.filters, 3, 1, self.dilation[1])(y)
    y = self.norm()(y)
    residual = x
    if self.stride != 1 or x.shape[-1] != self.filters:
      residual = self.norm()(_conv(self.conv, self.filters, 1, self.stride)(x))
    return nn.relu(residual + y)


class DRNSeg(nn.Module):
  """DRN-D backbone + 1x1 classifier + bilinear upsampling to the input size.

  Level i has `layers[i]` units of `channels[i]` filters, its first unit strided by
  `strides[i]`. Levels in `residual_levels` are basic blocks, the others conv layers.
  """
  num_classes: int
  channels: Sequence[int] = (16, 32, 64, 128, 256, 512, 512, 512)
  layers: Sequence[int] = (1, 1, 2, 2, 2, 2, 1, 1)
  strides: Sequence[int] = (1, 2, 2, 2, 1, 1, 1, 1)
  dilations: Sequence[int] = (1, 1, 1, 1, 2, 4, 2, 1)
  residual_levels: Sequence[int] = (2, 3, 4, 5)  # 0-based: levels 3-6.
  stem_kernel: int = 7
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: Optional[bool] = None):
    """Logits [B, H, W, classes]; `dropout` (default: `train`) as in models.SmallCNN."""
    height, width = x.shape[1:3]
    # He initialisation over fan-out, normal(0, sqrt(2 / (k * k * out))), as in the reference.
    conv = functools.partial(conv_lib.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = nn.relu(norm()(_conv(conv, self.channels[0], self.stem_kernel)(x)))
    for level, (filters, units, stride, dilation) in enumerate(
        zip(self.channels, self.layers, self.strides, self.dilations)):
      for unit in range(units):
        unit_stride = stride if unit == 0 else 1
        if level in self.residual_levels:
          x = DilatedBasicBlock(filters, unit_stride, (dilation, dilation), conv, norm)(x)
        else:
          x = nn.relu(norm()(_conv(conv, filters, 3, unit_stride, dilation)(x)))
      self.sow('intermediates', f'stage{level + 1}', x)
    self.sow('intermediates', 'features', jnp.mean(x, axis=(1, 2)))
    # dropout=True with train=False: MC dropout, BatchNorm keeps its running statistics.
    dropout_on = train if dropout is None else dropout
    x = nn.Dropout(self.dropout_rate, deterministic=not dropout_on)(x)
    x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)
    return jax.image.resize(x, (x.shape[0], height, width, self.num_classes), 'bilinear')


# The published drn_d_22 plan (the defaults above): output stride 8, ~15.9M parameters.
DRN_D_22 = DRNSeg

# A DRN-D of the same shape, cut down for CPU tests and the synthetic dataset:
# 3x3 stem, narrow levels, one unit each, output stride 4 (for 32x32 images).
DRN_TINY = functools.partial(DRNSeg, channels=(8, 16, 24, 32, 32, 32, 32, 32),
                             layers=(1, 1, 1, 1, 1, 1, 1, 1), strides=(1, 2, 2, 1, 1, 1, 1, 1),
                             stem_kernel=3)
