"""Each strategy on a hand-built case with a known answer; no strategy returns a bad index."""

import dataclasses
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import (badge, checkpointing, datasets, driver, kept_outputs, loss_prediction, models,
                     scoring, strategies, synthetic_seg, uncertainty)
from tod_jax.errors import ConfigError
from tod_jax.strategies import coreset, mc_dropout
from tod_jax.train_state import create_optimizer, create_train_state, init_variables


class TableScorer:
  """A Scorer stand-in whose outputs are fixed per pool index."""

  def __init__(self, table):
    self.table = np.asarray(table, np.float32)
    self.mesh = None  # The default mesh: every device.

  def logits(self, variables, images, indices):
    return self.table[indices]

  features = logits

  def uncertainty(self, variables, measure, images, indices):
    return np.asarray(measure(jax.nn.softmax(self.logits(variables, images, indices), -1)))

  def predicted_loss(self, variables, head, images, indices):
    return self.table[indices, 0]

  def gradient_embedding_factors(self, variables, images, indices):
    """a = 1: each candidate's BADGE embedding is its table row."""
    return np.ones((len(indices), 1), np.float32), self.table[indices]


def _ctx(table, candidates, labeled, state=None):
  dataset = types.SimpleNamespace(train_images=np.zeros((len(table), 1, 1, 1), np.uint8))
  state = state or types.SimpleNamespace(variables=None, loss_head_params={})
  config = types.SimpleNamespace(score_chunk_size=4,
                                 precision=types.SimpleNamespace(score='highest'))
  return strategies.QueryContext(config, dataset, np.asarray(labeled), np.asarray(candidates),
                                 state, None, TableScorer(table), np.random.default_rng(0))


def _query(name, ctx, budget):
  """The strategy's indices, after checking its result's form."""
  result = strategies.get_strategy(name)(ctx, budget)
  assert isinstance(result, strategies.QueryResult)
  assert result.scores is None or np.shape(result.scores) == ctx.query_pool.shape
  return result.indices


# Logits over 4 classes. Row 0: top-2 tie (margin's pick); row 1: the largest
# 1 - max p (least confidence's pick); row 2: the most uniform, largest entropy.
UNCERTAIN = [[3.0, 3.0, -5.0, -5.0], [0.2, 0.0, 0.0, -20.0], [1.0, 0.0, 0.0, 0.0],
             [9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize('name,expected', [('margin', 0), ('least_confidence', 1),
                                           ('entropy', 2)])
def test_uncertainty_strategies_pick_their_most_uncertain(name, expected):
  probs = jax.nn.softmax(jnp.asarray(UNCERTAIN[:4]))
  assert int(np.argmax(getattr(uncertainty, name)(probs))) == expected  # The case is valid.
  # Row 4 (uniform) would win every measure, but it is labeled.
  picked = _query(name, _ctx(UNCERTAIN, [0, 1, 2, 3], [4]), 1)
  np.testing.assert_array_equal(picked, [expected])


def test_k_center_greedy_picks_the_farthest_point_first():
  centers = np.array([[0.0], [10.0]])
  points = np.array([[1.0], [5.0], [3.0], [6.0], [9.5]])
  # Nearest-center distances 1, 5, 3, 4, 0.5: pick 5.0. Then 3.0 (min(3, 2) = 2 vs 1, 1, 0.5).
  for chunk in (1, 3, 1024):  # Candidates one at a time, padded chunks, or all at once.
    picks, distances = coreset.k_center_greedy(points, centers, 2, chunk)
    np.testing.assert_array_equal(picks, [1, 2])
    np.testing.assert_allclose(distances, [1.0, 5.0, 3.0, 4.0, 0.5])


def test_k_center_greedy_matches_a_numpy_loop():
  rng = np.random.default_rng(0)
  points, centers = rng.normal(size=(200, 8)), rng.normal(size=(37, 8))
  dist = np.min(np.linalg.norm(points[:, None] - centers[None], axis=-1), axis=1)
  expected = []
  for _ in range(15):
    j = int(np.argmax(dist))
    expected.append(j)
    dist = np.minimum(dist, np.linalg.norm(points - points[j], axis=-1))
  np.testing.assert_array_equal(coreset.k_center_greedy(points, centers, 15, chunk=16)[0],
                                expected)


def test_k_center_greedy_never_repeats_on_duplicates():
  picks, _ = coreset.k_center_greedy(np.zeros((5, 2)), np.zeros((1, 2)), 5)
  assert sorted(picks) == [0, 1, 2, 3, 4]


def test_coreset_strategy_returns_pool_indices_of_the_farthest_features():
  table = [[1.0], [5.0], [0.0], [3.0], [10.0]]  # Indices 2 and 4 are labeled.
  picked = _query('coreset', _ctx(table, [0, 1, 3], [2, 4], types.SimpleNamespace(variables=None)),
                  1)
  np.testing.assert_array_equal(picked, [1])  # 5.0: 5 from both centers.


def test_ll4al_picks_the_largest_predicted_loss():
  table = [[0.1], [2.0], [0.5], [9.0]]
  picked = _query('ll4al', _ctx(table, [0, 1, 2], [3]), 2)
  np.testing.assert_array_equal(picked, [1, 2])


@pytest.fixture(scope='module')
def real_setup():
  """A small CNN with dropout on 300 digits; the EMA model and baseline differ from w_c."""
  ds = datasets.load_digits()
  ds = dataclasses.replace(ds, train_images=ds.train_images[:300],
                           train_labels=ds.train_labels[:300])
  model = models.create_model('small_cnn', 10, dropout_rate=0.5)
  init = lambda seed: init_variables(model, jax.random.PRNGKey(seed), ds.image_shape)
  head = loss_prediction.init_params(model, init(0), jax.random.PRNGKey(9), ds.image_shape)
  config = ml_config()
  state = create_train_state(model, init(0), create_optimizer(config), init(1), decay_step=0,
                             loss_head_params=head)
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=64)
  return ds, model, state, init(2), scorer, config


def ml_config():
  from conftest import make_tiny_config  # pylint: disable=import-outside-toplevel
  config = make_tiny_config()
  config.dropout_rate, config.mc_samples = 0.5, 4
  return config


def test_emaod_is_cod_against_the_ema_model(real_setup):
  ds, _, state, baseline, scorer, config = real_setup
  candidates = np.arange(0, 300, 3)
  ctx = strategies.QueryContext(config, ds, np.arange(1, 300, 3), candidates, state, baseline,
                                scorer, np.random.default_rng(0))
  scores = scorer.cod(state.variables, state.ema_variables, ds.train_images, candidates)
  expected = candidates[np.argsort(-scores, kind='stable')[:10]]
  np.testing.assert_array_equal(_query('emaod', ctx, 10), expected)


def test_bald_is_zero_for_a_deterministic_model(real_setup):
  ds, _, state, _, _, _ = real_setup
  deterministic = models.create_model('small_cnn', 10, dropout_rate=0.0)
  scorer = scoring.Scorer(deterministic, ds.mean, ds.std, 'softmax', chunk_size=64)
  probs = scorer.mc_probabilities(state.variables, jax.random.PRNGKey(0), 5, ds.train_images,
                                  np.arange(50))
  assert probs.shape == (50, 5, 10)
  np.testing.assert_allclose(uncertainty.bald(probs), 0.0, atol=1e-6)
  # With dropout the passes differ and BALD is positive.
  _, _, _, _, dropout_scorer, _ = real_setup
  probs = dropout_scorer.mc_probabilities(state.variables, jax.random.PRNGKey(0), 5,
                                          ds.train_images, np.arange(50))
  assert float(np.min(uncertainty.bald(probs))) > 0.0
  # The strategies' on-device scores are the measures of those probabilities.
  for measure in (uncertainty.bald, mc_dropout.mean_entropy):
    np.testing.assert_allclose(
        dropout_scorer.mc_uncertainty(state.variables, jax.random.PRNGKey(0), 5, measure,
                                      ds.train_images, np.arange(50)),
        measure(probs), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', sorted(strategies.STRATEGIES))
def test_no_strategy_returns_a_labeled_index_or_a_duplicate(real_setup, name):
  ds, _, state, baseline, scorer, config = real_setup
  rng = np.random.default_rng(1)
  pool = rng.permutation(300)
  labeled, candidates = np.sort(pool[:100]), np.sort(pool[100:220])  # 80 neither.
  ctx = strategies.QueryContext(config, ds, labeled, candidates, state, baseline, scorer, rng)
  picked = np.asarray(_query(name, ctx, 40))
  assert picked.shape == (40,) and len(np.unique(picked)) == 40
  assert np.isin(picked, candidates).all() and not np.isin(picked, labeled).any()


def test_mc_strategies_refuse_a_config_without_dropout(tiny_config):
  tiny_config.strategy = 'bald'
  with pytest.raises(ValueError, match='dropout_rate'):
    strategies.check_config(tiny_config)
  tiny_config.dropout_rate = 0.3
  strategies.check_config(tiny_config)


@pytest.mark.parametrize('first_cycle', ['highest', 'lowest'])
def test_cod_queries_the_largest_cod_and_optionally_the_lowest_in_cycle_1(real_setup,
                                                                          first_cycle):
  ds, _, state, baseline, scorer, config = real_setup
  config.cod_first_cycle = first_cycle
  candidates = np.arange(0, 300, 2)
  scores = scorer.cod(state.variables, baseline, ds.train_images, candidates)
  largest = candidates[np.argsort(-scores, kind='stable')[:10]]
  smallest = candidates[np.argsort(scores, kind='stable')[:10]]
  for cycle in (1, 2):
    config.kept_outputs.enabled = cycle == 1  # Both scoring paths.
    config.cod_interval = 'cycle'
    ctx = strategies.QueryContext(config, ds, np.arange(1, 300, 2), candidates, state, baseline,
                                  scorer, np.random.default_rng(0), cycle)
    result = strategies.get_strategy('cod')(ctx, 10)
    lowest = cycle == 1 and first_cycle == 'lowest'
    np.testing.assert_array_equal(np.sort(result.indices),
                                  np.sort(smallest if lowest else largest))
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-6)
    assert result.order == ('lowest' if lowest else 'highest')
    assert (kept_outputs.KEPT in result.strategy_state) == config.kept_outputs.enabled
    assert ctx.strategy_state == {}  # Returned, never written into the context.
  config.cod_first_cycle = 'middle'
  with pytest.raises(ValueError, match='cod_first_cycle'):
    strategies.check_config(config)


def test_badge_starts_at_the_largest_gradient_and_scores_its_norm():
  # Embeddings = rows; labeled 0 and 3 would have the largest norms. Candidate norms 1, 2, 3.
  table = [[9.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [0.0, 3.0]]
  ctx = _ctx(table, [1, 2, 4], [0, 3])
  result = strategies.get_strategy('badge')(ctx, 1)
  np.testing.assert_array_equal(result.indices, [4])
  np.testing.assert_allclose(result.scores, [1.0, 2.0, 3.0])
  assert result.order == 'neither' and result.indices.dtype == np.int64
  picked = _query('badge', _ctx(table, [1, 2, 4], [0, 3]), 3)
  assert picked[0] == 4 and sorted(picked) == [1, 2, 4]


def test_badge_on_the_real_scorer_is_reproducible(real_setup):
  ds, _, state, baseline, scorer, config = real_setup
  candidates = np.arange(0, 300, 2)
  query = lambda seed: strategies.get_strategy('badge')(strategies.QueryContext(
      config, ds, np.arange(1, 300, 2), candidates, state, baseline, scorer,
      np.random.default_rng(seed)), 20)
  first, again, other = query(5), query(5), query(6)
  np.testing.assert_array_equal(first.indices, again.indices)
  assert not np.array_equal(first.indices, other.indices)
  a, h = scorer.gradient_embedding_factors(state.variables, ds.train_images, candidates)
  np.testing.assert_allclose(first.scores, np.sqrt(badge.squared_norms(a, h)), rtol=1e-6)
  assert first.indices[0] == candidates[np.argmax(first.scores)]


def test_badge_queries_a_digits_cycle(tiny_config, tmp_path):
  tiny_config.strategy, tiny_config.num_cycles, tiny_config.num_epochs = 'badge', 1, 1
  workdir = str(tmp_path)
  (record,) = driver.run(tiny_config, workdir)
  assert record['strategy'] == 'badge' and record['num_queried'] == 72
  checkpointer = checkpointing.Checkpointer(workdir)
  meta = checkpointer.restore_meta(1)
  checkpointer.close()
  queried, labeled = np.asarray(meta['queried']), np.asarray(meta['labeled'])
  initial = np.setdiff1d(labeled, queried)
  assert len(np.unique(queried)) == 72 and len(initial) == 144 and len(labeled) == 144 + 72
  assert meta['query_order'] == 'neither'
  assert len(meta['query_scores']) == 72 and min(meta['query_scores']) > 0.0


def test_badge_refuses_segmentation_before_training(tmp_path):
  from configs import synthetic_seg as seg_config  # pylint: disable=import-outside-toplevel
  config = seg_config.get_config()
  config.strategy = 'badge'
  dataset = synthetic_seg.load(num_train=40, num_test=4, size=16)
  with pytest.raises(ConfigError, match="Strategy 'badge' needs a classification dataset, but "
                     "'synthetic_seg' is segmentation .* e.g. 'cod', 'entropy' or 'coreset'"):
    driver.run(config, str(tmp_path), dataset)
  assert not os.path.exists(os.path.join(str(tmp_path), 'checkpoints'))
