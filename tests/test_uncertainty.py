"""Uncertainty measures against hand-computed values."""

import numpy as np

from tod_jax import uncertainty

LN2, LN4 = np.log(2.0), np.log(4.0)


def test_entropy():
  probs = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4,
                    [0.5, 0.25, 0.25, 0.0]])
  # Last row: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 0.5 ln 2 + ln 2 = 1.5 ln 2.
  np.testing.assert_allclose(uncertainty.entropy(probs), [LN2, 0.0, LN4, 1.5 * LN2], rtol=1e-6)


def test_margin_is_minus_the_top2_gap():
  probs = np.array([[0.6, 0.3, 0.1], [0.35, 0.25, 0.4], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(uncertainty.margin(probs), [-0.3, -0.05, 0.0], atol=1e-6)


def test_least_confidence():
  probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [1.0, 0.0, 0.0]])
  np.testing.assert_allclose(uncertainty.least_confidence(probs), [0.4, 0.3, 0.0], atol=1e-6)


def test_ratio_confidence():
  probs = np.array([[0.6, 0.3, 0.1], [0.35, 0.25, 0.4], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(uncertainty.ratio_confidence(probs), [0.5, 0.875, 1.0], rtol=1e-6)


def test_bald_is_mutual_information():
  disagree = [[1.0, 0.0], [0.0, 1.0]]  # H[mean] = ln 2, mean H = 0.
  agree = [[0.5, 0.5], [0.5, 0.5]]  # H[mean] = mean H = ln 2.
  mixed = [[0.5, 0.5], [1.0, 0.0]]  # H[(0.75, 0.25)] - ln 2 / 2.
  h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
  np.testing.assert_allclose(uncertainty.bald(np.array([disagree, agree, mixed])),
                             [LN2, 0.0, h - LN2 / 2], atol=1e-6)
