"""VAAL (Sinha et al., ICCV 2019): a beta-VAE and a discriminator on its latent codes.

The discriminator learns to tell labeled from unlabeled images by their latent
mean; the VAE learns to reconstruct both and to make the discriminator call
every image "labeled". The query takes the unlabeled images the discriminator
rates least likely to be labeled (`unlabeled_probability`, = 1 - D(mu)).

Architecture (VAAL's 32x32 networks, scaled to the image size):
  encoder: S stride-2 4x4 convs (no bias) + BatchNorm + ReLU, channels width *
    2^i capped at 8 * width, then Dense to mu and to logvar. S halves the image
    (rounding up) until its smaller side is at most 2: 8x8 -> 2 stages,
    32x32 -> 4 (as VAAL: 128..1024 channels, 2x2), 96 -> 6, 224 -> 7.
  decoder: Dense to the encoder's second-to-last feature map, then S - 1
    stride-2 4x4 transposed convs + BatchNorm + ReLU with the encoder's channels
    in reverse (each output cropped to the mirrored encoder size, for sides that
    are not powers of two), then a 1x1 conv to the image channels (32x32: VAAL's
    decoder exactly).
  discriminator: MLP 512-ReLU-512-ReLU-1 on mu (a logit; D = sigmoid).
"""

import dataclasses
import functools
import math
from typing import Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from tod_jax import batches, caches
from tod_jax.augment import normalize
from tod_jax.sharded_map import PoolMapper, make_mesh

BN_MOMENTUM = 0.9  # PyTorch's BatchNorm default (0.1 there), as in VAAL's code.


def stage_sizes(height: int, width: int) -> tuple[tuple[int, int], ...]:
  """Spatial sizes of the input and after each stride-2 stage (until min side <= 2)."""
  sizes = [(height, width)]
  while min(sizes[-1]) > 2:
    h, w = sizes[-1]
    sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
  if len(sizes) == 1:  # A tiny image still gets one stage.
    sizes.append(tuple(math.ceil(s / 2) for s in sizes[0]))
  return tuple(sizes)


def stage_channels(width: int, num_stages: int) -> tuple[int, ...]:
  """width * 2^i per stage, capped at 8 * width (VAAL: 128, 256, 512, 1024)."""
  return tuple(width * 2 ** min(i, 3) for i in range(num_stages))


def _batch_norm(train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)


class UpConv(nn.Module):
  """nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME', use_bias=False), same
  kernel [4, 4, in, out] and outputs, computed as four 2x2 convs, one per output phase.

  XLA's CPU gradient of a transposed conv (an input-dilated conv) is far slower than
  these plain convs; on accelerators both are fast. Output (2m + a, 2n + b) sums inputs
  (m - 1 + a .. m + a) x (n - 1 + b .. n + b) weighted by kernel[a::2, b::2].
  """
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:
    kernel = self.param('kernel', self.kernel_init, (4, 4, x.shape[-1], self.features))
    pad = ((1, 0), (0, 1))  # Phase 0 reads rows m - 1 and m; phase 1 rows m and m + 1.
    phases = [[jax.lax.conv_general_dilated(
        x, kernel[a::2, b::2], (1, 1), (pad[a], pad[b]),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) for b in (0, 1)] for a in (0, 1)]
    y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, H, 2, W, 2, C]
    batch, height, _, width, _, channels = y.shape
    return y.reshape(batch, 2 * height, 2 * width, channels)


class Encoder(nn.Module):
  """Images [B, H, W, C] -> (mu, logvar), each [B, latent_size]."""
  channels: tuple[int, ...]
  latent_size: int

  @nn.compact
  def __call__(self, x: chex.Array, train: bool) -> tuple[chex.Array, chex.Array]:
    for c in self.channels:
      x = nn.Conv(c, (4, 4), strides=(2, 2), padding='SAME', use_bias=False)(x)
      x = nn.relu(_batch_norm(train)(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.latent_size, name='mu')(x), nn.Dense(self.latent_size,
                                                              name='logvar')(x)


class Decoder(nn.Module):
  """Latent codes [B, latent_size] -> images [B, H, W, out_channels] (no output activation)."""
  channels: tuple[int, ...]  # The encoder's.
  sizes: tuple[tuple[int, int], ...]  # stage_sizes of the image.
  out_channels: int

  @nn.compact
  def __call__(self, z: chex.Array, train: bool) -> chex.Array:
    top = len(self.channels) - 1
    (h, w), c = self.sizes[top], self.channels[top]
    x = nn.Dense(h * w * c)(z).reshape(z.shape[0], h, w, c)
    for i in range(top - 1, -1, -1):
      x = UpConv(self.channels[i])(x)
      x = x[:, :self.sizes[i][0], :self.sizes[i][1]]
      x = nn.relu(_batch_norm(train)(x))
    return nn.Conv(self.out_channels, (1, 1))(x)


class VAE(nn.Module):
  """VAAL's beta-VAE, scaled to `image_shape` (H, W, C)."""
  image_shape: tuple[int, int, int]
  latent_size: int = 32
  width: int = 128

  def setup(self):
    sizes = stage_sizes(*self.image_shape[:2])
    channels = stage_channels(self.width, len(sizes) - 1)
    self.encoder = Encoder(channels, self.latent_size)
    self.decoder = Decoder(channels, sizes, self.image_shape[2])

  def __call__(self, x: chex.Array, key: chex.PRNGKey, train: bool = True
               ) -> tuple[chex.Array, chex.Array, chex.Array]:
    """(reconstruction, mu, logvar); the decoder reads z = mu + sigma * eps."""
    mu, logvar = self.encoder(x, train)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    return self.decoder(z, train), mu, logvar

  def encode(self, x: chex.Array, train: bool = False) -> tuple[chex.Array, chex.Array]:
    return self.encoder(x, train)


class Discriminator(nn.Module):
  """Latent codes [B, z] -> logits [B] of "labeled" (VAAL: 512-512-1 MLP)."""
  hidden: int = 512

  @nn.compact
  def __call__(self, z: chex.Array) -> chex.Array:
    z = nn.relu(nn.Dense(self.hidden)(z))
    z = nn.relu(nn.Dense(self.hidden)(z))
    return nn.Dense(1)(z)[:, 0]


def kl_divergence(mu: chex.Array, logvar: chex.Array) -> chex.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per sample: [B, z] -> [B]."""
  return -0.5 * jnp.sum(1.0 + logvar - mu ** 2 - jnp.exp(logvar), axis=-1)


def vae_loss(x: chex.Array, recon: chex.Array, mu: chex.Array, logvar: chex.Array,
             beta: float) -> chex.Array:
  """Mean squared reconstruction error (over all elements) + beta * mean per-sample KL.

  VAAL's code sums the KL over the batch; the mean keeps beta's weight independent of
  the batch size.
  """
  return jnp.mean((recon - x) ** 2) + beta * jnp.mean(kl_divergence(mu, logvar))


def bce(logits: chex.Array, label: float) -> chex.Array:
  """Mean binary cross-entropy of sigmoid(logits) against one label for all."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))


@dataclasses.dataclass(frozen=True)
class Vaal:
  """VAAL's networks and settings (hashable: a static jit argument).

  Its state is a dict {'vae': {'params', 'batch_stats'}, 'discriminator': {'params'},
  'vae_opt', 'discriminator_opt'}; `to_arrays`/`from_arrays` turn it into the nested dict
  of arrays a run checkpoints.
  """
  vae: VAE
  discriminator: Discriminator
  mean: tuple[float, ...]
  std: tuple[float, ...]
  beta: float = 1.0
  adversary_weight: float = 1.0
  learning_rate: float = 5e-4
  vae_steps: int = 2  # VAE updates per iteration (VAAL's code).
  discriminator_steps: int = 1  # Discriminator updates per iteration.

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate)

  def init(self, key: chex.PRNGKey) -> dict:
    """Fresh networks and optimizer states."""
    return _init(self, key)

  def to_arrays(self, state: dict) -> dict:
    """The state as nested dicts of arrays (optimizer states as {'000': leaf, ...})."""
    flat = lambda tree: {f'{i:03d}': leaf for i, leaf in enumerate(jax.tree.leaves(tree))}
    return {**state, 'vae_opt': flat(state['vae_opt']),
            'discriminator_opt': flat(state['discriminator_opt'])}

  def from_arrays(self, arrays: dict) -> dict:
    """Inverse of `to_arrays` (e.g. on a restored checkpoint's NumPy arrays)."""
    template = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    def unflat(name):
      treedef = jax.tree.structure(template[name])
      return jax.tree.unflatten(treedef, [arrays[name][k] for k in sorted(arrays[name])])
    state = {'vae': dict(arrays['vae']), 'discriminator': dict(arrays['discriminator']),
             'vae_opt': unflat('vae_opt'), 'discriminator_opt': unflat('discriminator_opt')}
    chex.assert_trees_all_equal_shapes_and_dtypes(state, template)
    return state


@functools.partial(jax.jit, static_argnums=0)
def _init(vaal: Vaal, key: chex.PRNGKey) -> dict:
  vae_key, eps_key, disc_key = jax.random.split(key, 3)
  x = jnp.zeros((1, *vaal.vae.image_shape), jnp.float32)
  vae_vars = vaal.vae.init(vae_key, x, eps_key, train=False)
  disc_vars = vaal.discriminator.init(disc_key, jnp.zeros((1, vaal.vae.latent_size)))
  vae = {'params': vae_vars['params'], 'batch_stats': vae_vars['batch_stats']}
  disc = {'params': disc_vars['params']}
  return {'vae': vae, 'discriminator': disc, 'vae_opt': vaal.optimizer.init(vae['params']),
          'discriminator_opt': vaal.optimizer.init(disc['params'])}


def vae_update(vaal: Vaal, state: dict, x: chex.Array, num_labeled: int,
               key: chex.PRNGKey) -> tuple[dict, chex.Array]:
  """One VAE step; x is the labeled batch (first num_labeled) and the unlabeled batch.

  Loss: reconstruction + beta * KL on each batch, + adversary_weight x the discriminator's
  BCE of calling both batches "labeled". Returns (new state, loss before the step).
  """
  disc = state['discriminator']

  def loss_fn(params):
    (recon, mu, logvar), updates = vaal.vae.apply(
        {'params': params, 'batch_stats': state['vae']['batch_stats']}, x, key, train=True,
        mutable=['batch_stats'])
    halves = [slice(0, num_labeled), slice(num_labeled, None)]
    unsup = sum(vae_loss(x[h], recon[h], mu[h], logvar[h], vaal.beta) for h in halves)
    logits = vaal.discriminator.apply(disc, mu)
    adversarial = sum(bce(logits[h], 1.0) for h in halves)
    return unsup + vaal.adversary_weight * adversarial, updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state['vae']['params'])
  updates, opt = vaal.optimizer.update(grads, state['vae_opt'], state['vae']['params'])
  vae = {'params': optax.apply_updates(state['vae']['params'], updates),
         'batch_stats': batch_stats}
  return {**state, 'vae': vae, 'vae_opt': opt}, loss


def discriminator_update(vaal: Vaal, state: dict, x: chex.Array, num_labeled: int,
                         key: chex.PRNGKey) -> tuple[dict, chex.Array]:
  """One discriminator step on the VAE's mu (train mode, as VAAL): BCE, labeled 1,
  unlabeled 0. Returns (new state, loss before the step)."""
  (_, mu, _), updates = vaal.vae.apply(state['vae'], x, key, train=True,
                                       mutable=['batch_stats'])
  mu = jax.lax.stop_gradient(mu)
  params = state['discriminator']['params']

  def loss_fn(p):
    logits = vaal.discriminator.apply({'params': p}, mu)
    return bce(logits[:num_labeled], 1.0) + bce(logits[num_labeled:], 0.0)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  step, opt = vaal.optimizer.update(grads, state['discriminator_opt'], params)
  return {**state, 'vae': {**state['vae'], 'batch_stats': updates['batch_stats']},
          'discriminator': {'params': optax.apply_updates(params, step)},
          'discriminator_opt': opt}, loss


@functools.partial(jax.jit, static_argnums=0)
def train_step(vaal: Vaal, state: dict, labeled: chex.Array, unlabeled: chex.Array,
               key: chex.PRNGKey) -> tuple[dict, dict]:
  """One VAAL iteration on uint8 batches: vae_steps VAE and discriminator_steps D updates.

  Returns (new state, {'vae_loss', 'discriminator_loss'} of the last update of each).
  """
  # One forward over both batches: BatchNorm sees labeled and unlabeled together.
  x = normalize(jnp.concatenate([labeled, unlabeled]), vaal.mean, vaal.std)
  n, vae_loss_value, disc_loss_value = labeled.shape[0], 0.0, 0.0
  # Unrolled: inside a lax.fori_loop XLA's CPU backend ran the same updates far slower.
  for i in range(vaal.vae_steps):
    state, vae_loss_value = vae_update(vaal, state, x, n, jax.random.fold_in(key, i))
  for i in range(vaal.discriminator_steps):
    state, disc_loss_value = discriminator_update(
        vaal, state, x, n, jax.random.fold_in(key, vaal.vae_steps + i))
  return state, {'vae_loss': vae_loss_value, 'discriminator_loss': disc_loss_value}


def _unlabeled_probability(vaal: Vaal, state: dict, images: chex.Array) -> chex.Array:
  mu, _ = vaal.vae.apply(state['vae'], normalize(images, vaal.mean, vaal.std),
                         method=VAE.encode)
  return jax.nn.sigmoid(-vaal.discriminator.apply(state['discriminator'], mu))


@caches.memoize
def _prober(vaal: Vaal, chunk: int, mesh: Mesh, level: Optional[str]) -> PoolMapper:
  """One pool mapper per setting: every cycle of a run scores with one compiled function."""
  return PoolMapper(functools.partial(_unlabeled_probability, vaal), chunk, mesh, level)


def unlabeled_probability(vaal: Vaal, state: dict, images: np.ndarray, indices: np.ndarray,
                          chunk: int, mesh: Optional[Mesh] = None,
                          level: Optional[str] = None) -> np.ndarray:
  """1 - D(mu) per index: the discriminator's probability of "unlabeled" ([n] float32).

  Networks in inference mode (BatchNorm running statistics), over the pool in sharded
  chunks of `chunk` images (sharded_map.PoolMapper) at precision `level`.
  """
  return _prober(vaal, chunk, mesh if mesh is not None else make_mesh(), level)(
      state, images, np.asarray(indices))


def from_config(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                mean: tuple[float, ...], std: tuple[float, ...]) -> Vaal:
  """VAAL for images of `image_shape` (H, W, C) with the config's vaal_* settings."""
  vae = VAE(tuple(image_shape), config.vaal.latent_size, config.vaal.width)
  return Vaal(vae, Discriminator(config.vaal.discriminator_width), tuple(mean), tuple(std),
              config.vaal.beta, config.vaal.adversary_weight, config.vaal.learning_rate,
              config.vaal.vae_steps, config.vaal.discriminator_steps)


def train(vaal: Vaal, state: dict, images: np.ndarray, labeled: np.ndarray,
          unlabeled: np.ndarray, num_iterations: int, batch_size: int,
          rng: np.random.Generator, key: chex.PRNGKey) -> tuple[dict, Optional[dict]]:
  """`num_iterations` VAAL iterations, each on a labeled and an unlabeled batch.

  Returns (new state, the last iteration's losses as floats, or None without iterations).
  """
  labeled_batches = batches.batched(rng, labeled, num_iterations, batch_size, 'passes')
  unlabeled_batches = batches.batched(rng, unlabeled, num_iterations, batch_size, 'passes')
  losses = None
  for i in range(num_iterations):
    state, losses = train_step(vaal, state, images[labeled_batches[i]],
                               images[unlabeled_batches[i]], jax.random.fold_in(key, i))
  return state, None if losses is None else {k: float(v) for k, v in losses.items()}
