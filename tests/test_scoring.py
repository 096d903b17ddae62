"""The sharded pool scorer against a plain NumPy loop; padding; eval accuracy."""

import chex
import jax
import numpy as np
import pytest

from tod_jax import augment, datasets, models, scoring, uncertainty
from tod_jax.sharded_map import PoolMapper, make_mesh
from tod_jax.train_state import init_variables

# Math against NumPy/PyTorch/XLA: float32 on every platform (conftest.highest_precision).
pytestmark = pytest.mark.usefixtures('highest_precision')


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope='module')
def two_models():
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  a = init_variables(model, jax.random.PRNGKey(0), ds.image_shape)
  b = init_variables(model, jax.random.PRNGKey(1), ds.image_shape)
  return ds, model, a, b


@pytest.mark.parametrize('output', ['softmax', 'logits'])
def test_cod_matches_numpy_loop(two_models, output):
  ds, model, a, b = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, output, chunk_size=16)
  indices = np.array([5, 3, 100, 7, 42, 8, 9, 11, 0, 1, 2, 13, 14, 15, 16, 17, 18, 19, 20, 1000])
  scores = scorer.cod(a, b, ds.train_images, indices)
  chex.assert_shape(scores, (len(indices),))
  expected = []
  for i in indices:  # One sample at a time, no chunking, no sharding.
    x = augment.normalize(ds.train_images[i:i + 1], ds.mean, ds.std)
    fa, fb = np.asarray(model.apply(a, x)), np.asarray(model.apply(b, x))
    if output == 'softmax':
      fa, fb = _softmax(fa), _softmax(fb)
    expected.append(np.linalg.norm(fa - fb))
  np.testing.assert_allclose(scores, expected, rtol=2e-5, atol=1e-6)


def test_cod_of_identical_models_is_zero(two_models):
  ds, model, a, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=64)
  # Two separately compiled forward passes may round differently in the last bits.
  np.testing.assert_allclose(scorer.cod(a, a, ds.train_images, np.arange(70)), 0.0, atol=1e-6)


def test_chunking_and_padding_do_not_change_results(two_models):
  ds, model, a, b = two_models
  full = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=2048)
  small = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=7)
  idx = np.arange(0, 1437, 13)  # 111 indices: 15 full chunks of 7 and a padded one.
  np.testing.assert_allclose(small.cod(a, b, ds.train_images, idx),
                             full.cod(a, b, ds.train_images, idx), rtol=1e-5, atol=1e-7)


def test_accuracy_matches_argmax(two_models):
  ds, model, a, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=100)
  x = augment.normalize(ds.test_images, ds.mean, ds.std)
  expected = np.mean(np.argmax(np.asarray(model.apply(a, x)), -1) == ds.test_labels)
  assert scorer.accuracy(a, ds.test_images, ds.test_labels) == pytest.approx(expected)


def test_pool_mapper_empty_indices_and_pytree_outputs():
  mapper = PoolMapper(lambda w, x: {'sum': x.sum(-1) * w, 'first': x[:, 0]}, chunk_size=4)
  images = np.arange(30, dtype=np.float32).reshape(10, 3)
  out = mapper(np.float32(2.0), images, np.array([9, 0, 4]))
  np.testing.assert_allclose(out['sum'], [2 * 84.0, 2 * 3.0, 2 * 39.0])
  np.testing.assert_allclose(out['first'], [27.0, 0.0, 12.0])
  empty = mapper(np.float32(2.0), images, np.array([], np.int64))
  chex.assert_shape([empty['sum'], empty['first']], (0,))


def test_chunk_size_rounds_up_to_device_count():
  mesh = make_mesh()
  mapper = PoolMapper(lambda w, x: x, chunk_size=1, mesh=mesh)
  assert mapper.chunk_size % mesh.size == 0


def test_unknown_output_kind_fails_fast(two_models):
  ds, model, _, _ = two_models
  with pytest.raises(ValueError, match='Unknown model output'):
    scoring.Scorer(model, ds.mean, ds.std, 'probabilities', chunk_size=8)


@pytest.fixture(scope='module')
def seg_models():
  from tod_jax import synthetic_seg  # pylint: disable=import-outside-toplevel
  ds = synthetic_seg.load(num_train=23, num_test=9, size=16)
  model = models.create_model('drn_tiny', ds.num_classes)
  a = init_variables(model, jax.random.PRNGKey(0), ds.image_shape)
  # A second model without a second (slow) init compilation: a perturbed copy.
  rng = np.random.default_rng(1)
  b = jax.tree.map(lambda l: np.asarray(l) + 0.1 * rng.standard_normal(l.shape, np.float32), a)
  return ds, model, a, b


@pytest.mark.parametrize('output', ['softmax', 'logits'])
def test_pixelwise_cod_matches_numpy_loop(seg_models, output):
  ds, model, a, b = seg_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, output, chunk_size=4)
  indices = np.array([22, 3, 0, 17, 5, 9, 11])
  scores = scorer.cod(a, b, ds.train_images, indices)
  chex.assert_shape(scores, (len(indices),))
  chex.assert_shape(scorer.logits(a, ds.train_images, indices), (len(indices), 16, 16, 5))
  apply = jax.jit(model.apply)
  for score, i in zip(scores, indices):  # One image, then every pixel and class in a loop.
    x = augment.normalize(ds.train_images[i:i + 1], ds.mean, ds.std)
    fa, fb = np.asarray(apply(a, x))[0], np.asarray(apply(b, x))[0]
    if output == 'softmax':
      fa, fb = _softmax(fa), _softmax(fb)
    total = 0.0
    for y in range(16):
      for x_ in range(16):
        total += sum((fa[y, x_, k] - fb[y, x_, k]) ** 2 for k in range(5))
    np.testing.assert_allclose(score, np.sqrt(total), rtol=2e-5)


def test_confusion_matrix_over_the_test_set_matches_numpy(seg_models):
  ds, model, a, _ = seg_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=4)  # 9: padded chunk.
  cm = scorer.confusion(a, ds.test_images, ds.test_labels, ds.num_classes, ds.ignore_label)
  x = augment.normalize(ds.test_images, ds.mean, ds.std)
  preds = np.argmax(np.asarray(jax.jit(model.apply)(a, x)), -1)
  expected = np.zeros((5, 5), np.int64)
  for label, pred in zip(ds.test_labels.ravel(), preds.ravel()):
    if label != 255:
      expected[label, pred] += 1
  np.testing.assert_array_equal(cm, expected)
  assert cm.sum() == (ds.test_labels != 255).sum()


def test_confusion_for_classification_labels_agrees_with_accuracy(two_models):
  ds, model, a, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=100)
  cm = scorer.confusion(a, ds.test_images, ds.test_labels, 10)
  assert cm.sum() == len(ds.test_labels)
  assert np.trace(cm) / cm.sum() == pytest.approx(
      scorer.accuracy(a, ds.test_images, ds.test_labels))


def test_pool_mapper_over_a_pytree_of_arrays():
  mapper = PoolMapper(lambda w, batch: batch[0].sum(-1) * w + batch[1], chunk_size=4)
  images = np.arange(30, dtype=np.float32).reshape(10, 3)
  labels = np.arange(10, dtype=np.float32) * 100
  out = mapper(np.float32(1.0), (images, labels), np.array([9, 0, 4, 5, 6]))
  np.testing.assert_allclose(out, [84 + 900, 3, 39 + 400, 48 + 500, 57 + 600])
  chex.assert_shape(mapper(np.float32(1.0), (images, labels), np.array([], np.int64)), (0,))


def test_discrepancy_between_output_stacks(two_models):
  ds, model, _, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=2)
  a = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
  b = np.array([[0.0, 4.0], [1.0, 1.0], [1.0, 0.0]], np.float32)  # 3 rows: one padded chunk.
  np.testing.assert_allclose(scorer.discrepancy(a, b), [5.0, 0.0, 1.0])


def test_uncertainty_is_the_measure_of_the_softmax_per_index(two_models):
  """Scorer.uncertainty == measure(softmax(logits)) by NumPy, for each measure and index order."""
  ds, model, a, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=16)
  indices = np.array([40, 2, 7, 300, 1, 99, 5, 18, 16, 17, 3, 250, 11, 12, 13, 14, 15, 6, 0])
  probs = _softmax(np.asarray(scorer.logits(a, ds.train_images, indices), np.float64))
  top2 = np.sort(probs, -1)[:, -2:]
  expected = {uncertainty.entropy: -np.sum(probs * np.log(probs), -1),
              uncertainty.margin: top2[:, 0] - top2[:, 1],
              uncertainty.least_confidence: 1.0 - probs.max(-1)}
  for measure, want in expected.items():
    got = scorer.uncertainty(a, measure, ds.train_images, indices)
    chex.assert_shape(got, (len(indices),))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_gradient_embedding_factors_are_softmax_minus_onehot_and_features(two_models):
  """BADGE's factors per index (a padded chunk) == NumPy on the Scorer's logits and features."""
  ds, model, a, _ = two_models
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=16)
  indices = np.array([40, 2, 7, 300, 1, 99, 5, 18, 16, 17, 3, 250, 11, 12, 13, 14, 15, 6, 0])
  with jax.default_matmul_precision('highest'):  # The same forward pass on a TF32 GPU too.
    factor_a, factor_h = scorer.gradient_embedding_factors(a, ds.train_images, indices)
    logits = np.asarray(scorer.logits(a, ds.train_images, indices), np.float64)
    features = scorer.features(a, ds.train_images, indices)
  chex.assert_shape([factor_a, factor_h], [(len(indices), 10), (len(indices), 128)])
  chex.assert_type([factor_a, factor_h], np.float32)
  expected_a = _softmax(logits) - np.eye(10)[np.argmax(logits, -1)]
  np.testing.assert_allclose(factor_a, expected_a, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(factor_h, features, rtol=1e-5, atol=1e-6)
