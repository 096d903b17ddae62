"""Top-b selection: exact size, no labeled index, deterministic ties."""

import numpy as np
import pytest

from tod_jax import ranking


def test_returns_highest_scores_first():
  picked = ranking.top_b(np.array([0.1, 0.9, 0.5, 0.7]), np.array([10, 11, 12, 13]), 2)
  np.testing.assert_array_equal(picked, [11, 13])


def test_ties_break_to_smaller_index_regardless_of_order():
  scores = np.array([1.0, 1.0, 2.0, 1.0])
  candidates = np.array([7, 3, 9, 5])
  np.testing.assert_array_equal(ranking.top_b(scores, candidates, 3), [9, 3, 5])
  perm = np.array([3, 1, 0, 2])
  np.testing.assert_array_equal(ranking.top_b(scores[perm], candidates[perm], 3), [9, 3, 5])


def test_random_cases_exact_size_subset_no_duplicates():
  rng = np.random.default_rng(0)
  for _ in range(50):
    pool = 200
    labeled = rng.choice(pool, 50, replace=False)
    candidates = np.setdiff1d(np.arange(pool), labeled)
    scores = rng.integers(0, 5, len(candidates)).astype(float)  # Many ties.
    b = int(rng.integers(0, len(candidates) + 1))
    picked = ranking.top_b(scores, candidates, b)
    assert len(picked) == b == len(np.unique(picked))
    assert not np.isin(picked, labeled).any()
    if 0 < b < len(candidates):  # Every picked score >= every unpicked score.
      picked_scores = scores[np.isin(candidates, picked)]
      other_scores = scores[~np.isin(candidates, picked)]
      assert picked_scores.min() >= other_scores.max()


def test_budget_larger_than_candidates_is_a_clear_error():
  with pytest.raises(ValueError, match='Cannot select 5 of 3 candidates'):
    ranking.top_b(np.zeros(3), np.arange(3), 5)


def test_nan_scores_are_an_error():
  with pytest.raises(FloatingPointError, match='NaN'):
    ranking.top_b(np.array([0.1, np.nan]), np.arange(2), 1)


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match='same length'):
    ranking.top_b(np.zeros(3), np.arange(4), 1)
