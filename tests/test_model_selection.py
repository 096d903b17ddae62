"""Model selection (Section V): scores, rankings, sample-level selection, top-k metric."""

import jax
import numpy as np
import pytest

from tod_jax import candidates, datasets, model_selection, models, scoring
from tod_jax.model_selection import CandidateOutputs
from tod_jax.train_state import init_variables


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _outputs(logits, baseline_logits, train_loss=0.0):
  return CandidateOutputs(np.asarray(logits, np.float32), np.asarray(baseline_logits, np.float32),
                          train_loss)


def test_tod_model_score_is_eq10_on_softmax_and_logits():
  rng = np.random.default_rng(0)
  logits, base = rng.normal(size=(2, 7, 4)), rng.normal(size=(2, 7, 4))
  cands = [_outputs(logits[i], base[i]) for i in range(2)]
  for output, f in (('softmax', _softmax), ('logits', lambda z: z)):
    expected = [np.mean(np.sum((f(logits[i]) - f(base[i])) ** 2, -1)) for i in range(2)]
    np.testing.assert_allclose(model_selection.model_scores('tod', cands, output), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(model_selection.sample_scores('tod', cands, output).mean(-1),
                               expected, rtol=1e-5)


def test_uncertainty_scores_hand_computed():
  probs = np.array([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
  cands = [_outputs(np.log(probs), np.log(probs))]
  score = lambda m: model_selection.sample_scores(m, cands)[0]
  np.testing.assert_allclose(score('least_confidence'), [0.5, 2 / 3], rtol=1e-5)
  np.testing.assert_allclose(score('margin_confidence'), [0.8, 1.0], rtol=1e-5)
  np.testing.assert_allclose(score('ratio_confidence'), [0.6, 1.0], rtol=1e-5)
  np.testing.assert_allclose(
      score('entropy'), [-(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)),
                         np.log(3)], rtol=1e-5)


def test_train_loss_is_the_same_for_every_sample():
  cands = [_outputs(np.zeros((3, 2)), np.zeros((3, 2)), loss) for loss in (0.7, 0.2)]
  np.testing.assert_allclose(model_selection.sample_scores('train_loss', cands),
                             [[0.7] * 3, [0.2] * 3])
  np.testing.assert_array_equal(model_selection.rank(
      model_selection.model_scores('train_loss', cands)), [1, 0])


def test_candidate_identical_to_its_baseline_scores_zero():
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape)
  other = init_variables(model, jax.random.PRNGKey(1), ds.image_shape)
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=64)
  same = candidates.Candidate('same', variables, {'1epoch': variables}, {'train_loss': 1.0})
  moved = candidates.Candidate('moved', variables, {'1epoch': other}, {'train_loss': 1.0})
  images = ds.test_images[:100]
  outs = [model_selection.candidate_outputs(scorer, c, images, '1epoch') for c in (same, moved)]
  scores = model_selection.model_scores('tod', outs)
  # Two compiled passes over the same variables may differ in the last bits.
  np.testing.assert_allclose(scores[0], 0.0, atol=1e-10)
  assert scores[1] > 1e-6
  np.testing.assert_array_equal(model_selection.rank(scores), [0, 1])


def test_select_per_sample_takes_the_argmin_candidates_prediction():
  scores = np.array([[0.1, 0.9, 0.5, 0.3],
                     [0.2, 0.1, 0.6, 0.3],
                     [0.3, 0.5, 0.4, 0.3]])
  predictions = np.array([[0, 1, 2, 3],
                          [4, 5, 6, 7],
                          [8, 9, 1, 2]])
  # Argmins per sample: 0, 1, 2, 0 (tie -> first candidate).
  np.testing.assert_array_equal(model_selection.select_per_sample(scores, predictions),
                                [0, 5, 1, 3])


def test_top_k_hit_on_a_hand_built_ranking():
  scores = np.array([0.3, 0.1, 0.2, 0.4])  # Ranking: 1, 2, 0, 3.
  accuracies = np.array([0.95, 0.80, 0.90, 0.70])  # Truly best: 0, ranked third.
  assert [model_selection.top_k_hit(scores, accuracies, k) for k in (1, 2, 3, 4)] == [
      False, False, True, True]
  tied = np.array([0.80, 0.80, 0.95, 0.95])  # Best: 2 and 3; 2 is ranked second.
  assert not model_selection.top_k_hit(scores, tied, 1)
  assert model_selection.top_k_hit(scores, tied, 2)


def test_top_k_hit_rate_over_random_subsets():
  accuracies = np.array([0.9, 0.8, 0.7])
  rng = np.random.default_rng(0)
  # A perfect ranking always hits, a reversed one never does at k=1.
  assert model_selection.top_k_hit_rate(-accuracies, accuracies, 1, 2, 50, rng) == 1.0
  assert model_selection.top_k_hit_rate(accuracies, accuracies, 1, 2, 50, rng) == 0.0
  # Ranking 1, 0, 2: of the pairs {0,1}, {0,2}, {1,2} only {0,1} misses -> 2/3.
  rate = model_selection.top_k_hit_rate(np.array([0.2, 0.1, 0.3]), accuracies, 1, 2, 3000, rng)
  assert abs(rate - 2 / 3) < 0.03, rate
  with pytest.raises(ValueError, match='needs at least 5 candidates'):
    model_selection.top_k_hit_rate(accuracies, accuracies, 1, 5, 10, rng)


def test_evaluate_accuracies_and_sample_level_selection():
  labels = np.array([0, 1, 2])
  eye = np.eye(3) * 10
  # Each candidate is right exactly where it did not move since its baseline.
  right0 = _outputs(eye[[0, 1, 0]], eye[[0, 1, 1]])
  right1 = _outputs(eye[[1, 0, 2]], eye[[0, 1, 2]])
  ev = model_selection.evaluate([right0, right1], labels, ['tod'], num_draws=5)
  np.testing.assert_allclose(ev.accuracies, [2 / 3, 1 / 3])
  # TOD per sample: c0 [0, 0, ~2], c1 [~2, ~2, 0] -> picks c0, c0, c1: all right.
  assert ev.sample_accuracy['tod'] == 1.0
  assert ev.top_k['tod'] == {}  # Fewer than 3 candidates: no Table III setting applies.


def test_unknown_method_names_the_choices():
  with pytest.raises(ValueError, match='Unknown model-selection method'):
    model_selection.sample_scores('ll4al', [_outputs(np.zeros((1, 2)), np.zeros((1, 2)))])
