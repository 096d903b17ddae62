"""Per-pixel strategies on segmentation: image scores against NumPy pixel loops, driver runs."""

import os

import chex
import jax
import numpy as np
import pytest

from tod_jax import augment, checkpointing, driver, models, scoring, synthetic_seg
from tod_jax import uncertainty
from tod_jax.sharded_map import make_mesh
from tod_jax.strategies import mc_dropout
from tod_jax.train_state import init_variables

# Math against NumPy/PyTorch/XLA: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')


# 20 of the pool's images in chunks of 16: a full chunk and a padded one; a scrambled order.
INDICES = np.random.default_rng(0).permutation(60)[:20]
CHUNK, MC_PASSES, DROPOUT = 16, 2, 0.5


@pytest.fixture(scope='module')
def seg():
  """The driver tests' dataset, model (drn_tiny, dropout 0.5) and scorer, and a model without
  dropout: the strategy runs below reuse the functions these tests compile."""
  ds = synthetic_seg.load(num_train=60, num_test=8, size=16)
  deterministic = models.create_model('drn_tiny', ds.num_classes)
  with_dropout = models.create_model('drn_tiny', ds.num_classes, dropout_rate=DROPOUT)
  variables = init_variables(with_dropout, jax.random.PRNGKey(0), ds.image_shape)
  scorer = lambda model: scoring.shared_scorer(model, tuple(ds.mean), tuple(ds.std), 'softmax',
                                               CHUNK, make_mesh())
  return ds, variables, deterministic, with_dropout, scorer(deterministic), scorer(with_dropout)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _entropy(p):
  return -np.sum(p * np.log(np.maximum(p, 1e-300)))


def _pixel_mean(per_pixel, image_probs):
  """Mean of per_pixel(p) over the pixels of one [H, W, ...] image, one pixel at a time."""
  height, width = image_probs.shape[:2]
  return np.mean([per_pixel(image_probs[y, x]) for y in range(height) for x in range(width)])


NUMPY_MEASURES = {
    'entropy': _entropy,
    'margin': lambda p: np.sort(p)[-2] - np.sort(p)[-1],
    'least_confidence': lambda p: 1.0 - np.max(p),
}


def test_measures_broadcast_over_pixels_and_image_mean_keeps_classification_scores():
  rng = np.random.default_rng(0)
  probs = _softmax(rng.normal(size=(3, 4, 5, 6)))  # [N, H, W, K]
  np.testing.assert_allclose(uncertainty.entropy(probs)[1, 2, 3], _entropy(probs[1, 2, 3]),
                             rtol=1e-5)
  mc = _softmax(rng.normal(size=(3, 4, 5, 2, 6)))  # [N, H, W, T, K]
  np.testing.assert_allclose(uncertainty.bald(mc)[2, 0, 4], _bald_per_pixel(mc[2, 0, 4]),
                             rtol=1e-4)
  np.testing.assert_allclose(uncertainty.image_mean(mc[..., 0, 0]), mc[..., 0, 0].mean((1, 2)),
                             rtol=1e-6)
  np.testing.assert_array_equal(uncertainty.image_mean(np.arange(3.0)), [0.0, 1.0, 2.0])


def test_per_pixel_scores_are_image_means_of_a_numpy_pixel_loop(seg):
  ds, variables, _, model, _, scorer = seg  # Dropout is off unless asked for.
  apply = jax.jit(model.apply)
  probs = {}
  for i in INDICES:  # One image at a time: no chunking, padding or sharding.
    x = augment.normalize(ds.train_images[i:i + 1], ds.mean, ds.std)
    probs[i] = _softmax(np.asarray(apply(variables, x), np.float64)[0])
  for name, per_pixel in NUMPY_MEASURES.items():
    got = scorer.uncertainty(variables, getattr(uncertainty, name), ds.train_images, INDICES)
    chex.assert_shape(got, (len(INDICES),))
    want = [_pixel_mean(per_pixel, probs[i]) for i in INDICES]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)


def test_drn_dropout_switch_keeps_the_default_deterministic(seg):
  ds, variables, deterministic, with_dropout, _, _ = seg
  images = ds.train_images[:4]
  x = augment.normalize(images, ds.mean, ds.std)
  # Default (inference): no dropout, the deterministic model's logits.
  base = np.asarray(deterministic.apply(variables, x))
  np.testing.assert_allclose(with_dropout.apply(variables, x), base, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(with_dropout.apply(variables, x, dropout=False), base, rtol=1e-6,
                             atol=1e-6)
  on = [np.asarray(with_dropout.apply(variables, x, dropout=True,
                                      rngs={'dropout': jax.random.PRNGKey(k)})) for k in (0, 1)]
  assert not np.allclose(on[0], on[1]) and not np.allclose(on[0], base)


def _bald_per_pixel(passes):
  """BALD of one pixel's [T, K] pass probabilities, by NumPy."""
  return _entropy(passes.mean(0)) - np.mean([_entropy(p) for p in passes])


def test_mc_scores_are_image_means_of_per_pixel_measures(seg):
  ds, variables, _, _, deterministic, dropout_scorer = seg
  rng = jax.random.PRNGKey(3)
  # Without dropout all passes agree: BALD is 0 for every image.
  np.testing.assert_allclose(
      deterministic.mc_uncertainty(variables, rng, MC_PASSES, uncertainty.bald,
                                   ds.train_images, INDICES), 0.0, atol=1e-6)
  probs = np.asarray(dropout_scorer.mc_probabilities(variables, rng, MC_PASSES, ds.train_images,
                                                     INDICES), np.float64)
  chex.assert_shape(probs, (len(INDICES), 16, 16, MC_PASSES, ds.num_classes))
  per_pixel = {uncertainty.bald: _bald_per_pixel,
               mc_dropout.mean_entropy: lambda passes: _entropy(passes.mean(0))}
  for measure, numpy_measure in per_pixel.items():
    got = dropout_scorer.mc_uncertainty(variables, rng, MC_PASSES, measure, ds.train_images,
                                        INDICES)
    want = [_pixel_mean(numpy_measure, image) for image in probs]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=measure.__name__)
    assert np.all(got > 0.0)  # With dropout the passes differ in every image.


@pytest.fixture(scope='module')
def small_seg_config(seg):
  """configs/synthetic_seg.py, one 1-epoch cycle on `seg`'s 60 16x16 images, dropout 0.5.

  One model and setting for every strategy, so the runs share compiled functions.
  """
  from configs import synthetic_seg as seg_config  # pylint: disable=import-outside-toplevel
  config = seg_config.get_config()
  config.num_cycles, config.num_epochs = 1, 1
  config.dropout_rate, config.mc_samples = DROPOUT, MC_PASSES
  config.score_chunk_size = CHUNK
  config.progress_bar, config.tensorboard = False, False
  return config, seg[0]


@pytest.mark.parametrize('name', ['entropy', 'margin', 'least_confidence', 'mc_dropout', 'bald',
                                  'coreset'])
def test_strategy_runs_a_segmentation_cycle(small_seg_config, tmp_path, name):
  config, dataset = small_seg_config
  config = config.copy_and_resolve_references()
  config.strategy = name
  workdir = str(tmp_path)
  (record,) = driver.run(config, workdir, dataset)
  assert record['strategy'] == name and record['num_labeled'] == 6  # 10% of 60.
  assert record['num_queried'] == 3 and 0.0 <= record['test_miou'] <= 1.0
  checkpointer = checkpointing.Checkpointer(workdir)
  meta = checkpointer.restore_meta(1)
  checkpointer.close()
  queried, labeled = np.asarray(meta['queried']), np.asarray(meta['labeled'])
  # Distinct, new: the labeled set grew by exactly the queried images.
  assert len(np.unique(queried)) == 3 and np.isin(queried, labeled).all()
  assert len(labeled) == len(np.unique(labeled)) == 6 + 3
  assert os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
