"""VAAL: network shapes, its losses by hand, a training step, and 2-cycle runs with resume."""

import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import make_tiny_config
from tod_jax import augment, checkpointing, datasets, driver, rundir, strategies, vaal
from tod_jax.strategies import vaal as vaal_strategy


def vaal_config(num_cycles=2):
  """The tiny digits config (tiny VAAL networks) with strategy 'vaal'."""
  config = make_tiny_config()
  config.strategy, config.num_cycles = 'vaal', num_cycles
  return config


@pytest.mark.parametrize('shape,sizes', [
    ((8, 8, 1), ((8, 8), (4, 4), (2, 2))),
    ((32, 32, 3), ((32, 32), (16, 16), (8, 8), (4, 4), (2, 2))),
    ((96, 96, 3), ((96, 96), (48, 48), (24, 24), (12, 12), (6, 6), (3, 3), (2, 2)))])
def test_stride_2_stages_follow_the_image_size(shape, sizes):
  assert vaal.stage_sizes(*shape[:2]) == sizes
  # 32x32: VAAL's 128, 256, 512, 1024 channels; deeper stages stay at 8x the width.
  assert vaal.stage_channels(128, 6) == (128, 256, 512, 1024, 1024, 1024)


@pytest.mark.parametrize('shape', [(8, 8, 1), (32, 32, 3)])
def test_encoder_decoder_and_discriminator_shapes(shape):
  vae, disc = vaal.VAE(shape, latent_size=8, width=4), vaal.Discriminator(16)
  x, key = jnp.zeros((3, *shape)), jax.random.PRNGKey(0)
  # Traced, never compiled: arrays of zeros of the outputs' shapes.
  shaped = lambda f, *args: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                         jax.eval_shape(f, *args))
  variables = shaped(lambda: vae.init(key, x, key, train=False))
  recon, mu, logvar = shaped(lambda v: vae.apply(v, x, key, train=False), variables)
  chex.assert_shape(recon, (3, *shape))
  chex.assert_shape([mu, logvar], (3, 8))
  encoded = shaped(lambda v: vae.apply(v, x, method=vaal.VAE.encode), variables)
  chex.assert_shape(encoded, [(3, 8), (3, 8)])
  # The encoder's last feature map is 2x2 with the last stage's channels (2 or 4 stages).
  top = len(vaal.stage_sizes(*shape[:2])) - 2
  chex.assert_shape(variables['params']['encoder']['mu']['kernel'],
                    (2 * 2 * 4 * 2 ** top, 8))
  logits = shaped(lambda: disc.apply(disc.init(key, mu), mu))
  chex.assert_shape(logits, (3,))


@jax.jit
def _up_convs(x, params):
  ref = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding='SAME', use_bias=False)
  return vaal.UpConv(5).apply(params, x), ref.apply(params, x)


def test_up_conv_equals_a_flax_transposed_conv():
  for shape in ((2, 4, 4, 3), (2, 3, 5, 2)):  # Also odd sides.
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    params = {'params': {'kernel': jax.random.normal(jax.random.PRNGKey(1), (4, 4, 3, 5))}}
    if shape[-1] == 2:
      params['params']['kernel'] = params['params']['kernel'][:, :, :2]
    ours, ref = _up_convs(x, params)
    chex.assert_shape(ours, (2, 2 * shape[1], 2 * shape[2], 5))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_vae_loss_by_hand():
  x = np.array([[1.0, 2.0], [0.0, -1.0]])
  recon = np.array([[1.5, 2.0], [1.0, -1.0]])
  mu = np.array([[1.0, 0.0], [0.5, -0.5]])
  logvar = np.array([[0.0, np.log(2.0)], [0.0, 0.0]])
  # KL per sample: 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2).
  kl = np.array([0.5 * (1.0 + 0 + (2.0 - 1 - np.log(2.0))), 0.5 * (0.25 + 0.25)])
  np.testing.assert_allclose(vaal.kl_divergence(mu, logvar), kl, rtol=1e-6)
  mse = (0.25 + 0 + 1.0 + 0) / 4
  np.testing.assert_allclose(vaal.vae_loss(x, recon, mu, logvar, beta=2.0),
                             mse + 2.0 * kl.mean(), rtol=1e-6)


def _tiny_vaal():
  """The driver tests' VAAL (same digits mean and std): one compiled init for both."""
  ds = datasets.load_digits()
  return vaal.from_config(vaal_config(), ds.image_shape, ds.mean, ds.std)


def test_one_discriminator_step_lowers_its_loss_on_a_fixed_batch():
  net = _tiny_vaal()
  state = net.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  labeled = rng.integers(0, 100, (16, 8, 8, 1)).astype(np.uint8)  # Dark vs bright images.
  unlabeled = rng.integers(150, 256, (16, 8, 8, 1)).astype(np.uint8)
  x = augment.normalize(jnp.concatenate([labeled, unlabeled]), net.mean, net.std)
  step = jax.jit(vaal.discriminator_update, static_argnums=(0, 3))
  # The codes the discriminator reads depend only on the VAE params (BatchNorm in train
  # mode), so the second call's loss is the updated discriminator's on the same codes.
  losses = []
  for _ in range(3):
    state, loss = step(net, state, x, 16, jax.random.PRNGKey(1))
    losses.append(float(loss))
  assert losses[2] < losses[1] < losses[0]


def test_state_round_trips_through_its_checkpoint_arrays():
  net = _tiny_vaal()
  state = net.init(jax.random.PRNGKey(0))
  arrays = jax.tree.map(np.asarray, net.to_arrays(state))
  assert set(arrays) == {'vae', 'discriminator', 'vae_opt', 'discriminator_opt'}
  chex.assert_trees_all_equal(net.from_arrays(arrays), state)


@pytest.mark.parametrize('field,value', [('width', 0), ('beta', -1.0)])
def test_bad_vaal_settings_are_refused(field, value):
  config = vaal_config()
  config.vaal[field] = value
  with pytest.raises(ValueError, match=rf'vaal\.{field} .*--config\.vaal\.{field}'):
    strategies.check_config(config)


@pytest.fixture(scope='module')
def two_cycles(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('vaal_full'))
  driver.run(vaal_config(), workdir)
  return workdir


def _vae_adam_count(workdir, cycle):
  path = os.path.join(workdir, 'checkpoints', str(cycle), 'strategy_state')
  restored = ocp.StandardCheckpointer().restore(path)
  return int(restored[vaal_strategy.KEY]['vae_opt']['000'])  # ScaleByAdamState.count.


def test_vaal_queries_unlabeled_samples_with_finite_scores(two_cycles):
  ckpt = checkpointing.Checkpointer(two_cycles)
  metas = [ckpt.restore_meta(c) for c in (1, 2)]
  ckpt.close()
  for meta in metas:  # 'labeled': the set after the cycle's query.
    before = set(meta['labeled']) - set(meta['queried'])
    assert len(meta['queried']) == 72 and not set(meta['queried']) & before
    scores = np.asarray(meta['query_scores'])
    assert scores.shape == (72,) and np.isfinite(scores).all()
    assert ((0 <= scores) & (scores <= 1)).all() and meta['query_order'] == 'highest'
  # The networks carry over: cycle 2's Adam count adds its steps to cycle 1's.
  config = vaal_config()
  steps = [config.vaal.vae_steps * vaal_strategy.num_iterations(config, n) for n in (144, 216)]
  assert [_vae_adam_count(two_cycles, c) for c in (1, 2)] == [steps[0], sum(steps)]


def test_resumed_vaal_run_selects_what_an_uninterrupted_run_selects(two_cycles, tmp_path):
  workdir = str(tmp_path)
  driver.run(vaal_config(num_cycles=1), workdir)
  driver.run(vaal_config(num_cycles=2), workdir)
  np.testing.assert_array_equal(rundir.final_labeled(workdir), rundir.final_labeled(two_cycles))
