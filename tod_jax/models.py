"""Networks, chosen by config name: a CIFAR ResNet-18, a small CNN, DRN-D (drn.py).

Every model maps NHWC float images to logits `[batch, classes]` (segmentation
models: `[batch, H, W, classes]`), keeps BatchNorm
statistics in the 'batch_stats' collection, and sows its penultimate features
('features') and per-stage outputs ('stage1'..) into 'intermediates' for
strategies that need them (core-set, LL4AL). Dropout is on in training mode;
`dropout=True` turns it on in inference mode too (MC dropout: BatchNorm keeps
its running statistics).
"""

import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tod_jax import caches
from tod_jax import conv as conv_lib
from tod_jax import drn
from tod_jax.errors import ConfigError
from tod_jax.registry import Registry

ModuleDef = Any


def _dropout_on(train: bool, dropout: Optional[bool]) -> bool:
  return train if dropout is None else dropout


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convs with an identity or 1x1 shortcut."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides))(residual)
      residual = self.norm()(residual)
    return nn.relu(residual + y)


def _symmetric_conv(conv: ModuleDef, filters: int, kernel_size: Sequence[int],
                    strides: Sequence[int] = (1, 1)):
  """`conv` padded (k - 1) / 2 on both sides, as PyTorch pads; 'SAME' pads one less on the
  low side of a strided conv on even sizes, which shifts every later feature map."""
  padding = [((k - 1) // 2, (k - 1) // 2) for k in kernel_size]
  return conv(filters, kernel_size, strides, padding=padding)


class ResNet(nn.Module):
  """ResNet; `cifar_stem` uses a 3x3 stride-1 stem and no max-pool.

  `torch_padding` pads convolutions and the max-pool as torchvision's ResNet does, so
  its weights (pretrained.py) compute the same function here.
  """
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  cifar_stem: bool = True
  torch_padding: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: Optional[bool] = None):
    conv = functools.partial(conv_lib.Conv, use_bias=False, dtype=self.dtype, padding='SAME')
    if self.torch_padding:
      conv = functools.partial(_symmetric_conv, conv)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    if self.cifar_stem:
      x = nn.relu(norm()(conv(self.widths[0], (3, 3))(x)))
    else:
      x = nn.relu(norm()(conv(self.widths[0], (7, 7), (2, 2))(x)))
      pool_padding = ((1, 1), (1, 1)) if self.torch_padding else 'SAME'
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pool_padding)
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(width, strides, conv=conv, norm=norm)(x)
      self.sow('intermediates', f'stage{i + 1}', x)
    x = jnp.mean(x, axis=(1, 2))
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate, deterministic=not _dropout_on(train, dropout))(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class SmallCNN(nn.Module):
  """Three conv-BN-ReLU layers, one max-pool, global pool, linear head."""
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: Optional[bool] = None):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)
    for i, width in enumerate(self.widths):
      x = conv_lib.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(x)
      x = nn.relu(norm()(x))
      self.sow('intermediates', f'stage{i + 1}', x)
      if i == 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate, deterministic=not _dropout_on(train, dropout))(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS: Registry[Callable[..., nn.Module]] = Registry('model', 'model')
MODELS.register('resnet18', functools.partial(ResNet, cifar_stem=True))
# torchvision's ResNet-18, padding included: its ImageNet weights load (pretrained.py).
MODELS.register('resnet18_imagenet', functools.partial(ResNet, cifar_stem=False,
                                                       torch_padding=True))
MODELS.register('small_cnn', SmallCNN)
# Segmentation (logits [batch, H, W, classes]); see drn.py.
MODELS.register('drn_d_22', drn.DRN_D_22)
MODELS.register('drn_tiny', drn.DRN_TINY)


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
  """Registers a user's own Flax module under `name` (for --config.model=name).

  `factory(num_classes=, dropout_rate=, dtype=)` builds the module; its
  `__call__(x, train=False, dropout=None)` maps NHWC float images to logits
  [batch, classes] and keeps BatchNorm statistics (if any) in 'batch_stats'.
  Strategies that need features ('coreset', 'badge', LL4AL, tod_loss_form='reference')
  need it to sow 'features' (and 'stage<i>') into 'intermediates' as the built-in
  models do; MC dropout needs `dropout=True` to turn dropout on at inference.
  config.param_init='pytorch' (the default) re-draws its initial values (initializers.py);
  'flax' keeps the module's own initialisers.
  """
  MODELS.register(name, factory)


def parameter_count(name: str, num_classes: int = 10) -> int:
  """Parameters of model `name` on 32x32x3 inputs, counted abstractly (JAX is not started)."""
  model = create_model(name, num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes['params']))


def create_model(name: str, num_classes: int, dropout_rate: float = 0.0,
                 dtype: Any = 'float32') -> nn.Module:
  """The model registered as `name`, computing in `dtype`; one object per setting.

  Runs that build the same model get the same object, so jitted functions keyed on
  its apply method (the train step, the scorer) compile once per process.

  dtype 'bfloat16' is mixed precision: parameters and BatchNorm statistics stay
  float32 (flax's param_dtype; BatchNorm reduces in float32), convolutions and
  activations run in bfloat16, and the logits are cast back to float32 for the
  losses and softmax.
  """
  return _create_model(MODELS.get(name), num_classes, float(dropout_rate), jnp.dtype(dtype))


@caches.memoize
def _create_model(factory: Callable[..., nn.Module], num_classes: int, dropout_rate: float,
                  dtype: Any) -> nn.Module:
  return factory(num_classes=num_classes, dropout_rate=dropout_rate, dtype=dtype)


# What parts of a run read from a model's sown 'intermediates', and how a model provides it.
FEATURES, STAGES = 'features', 'stage<i>'
HOW_TO_SOW = {
    FEATURES: "self.sow('intermediates', 'features', x) on its pooled features x [batch, D]",
    STAGES: "self.sow('intermediates', f'stage{i}', x) after each stage i = 1, 2, ...",
}


@caches.memoize
def sown_names(model: nn.Module, image_shape: tuple[int, ...]) -> frozenset[str]:
  """Names `model` sows into 'intermediates' on one image of `image_shape` (traced, not run)."""
  init = functools.partial(model.init, train=False, mutable=True)
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)))
  return frozenset(shapes.get('intermediates', {}))


def check_intermediates(name: str, model: nn.Module, image_shape: tuple[int, ...],
                        needs: Mapping[str, Sequence[str]]) -> None:
  """Raises ConfigError if model `name` does not sow what `needs` ({FEATURES or STAGES:
  the config settings that read it}) asks for, saying what to add."""
  sown = sown_names(model, image_shape)
  has = {FEATURES: FEATURES in sown, STAGES: any(n.startswith('stage') for n in sown)}
  missing = [f"no {what!r} (read by {' and '.join(users)}; add {HOW_TO_SOW[what]})"
             for what, users in needs.items() if users and not has[what]]
  if missing:
    raise ConfigError(f"Model {name!r} sows {', and '.join(missing)} into 'intermediates' in "
                      'its __call__ (docs/own-data.md).')
