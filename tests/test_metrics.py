"""Confusion matrix, accuracy, per-class IoU and mIoU against hand-computed values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import metrics

# 3 classes, ignore label 255. A 2x4 "image":
LABELS = np.array([[0, 0, 1, 255],
                   [2, 1, 1, 255]])
PREDS = np.array([[0, 1, 1, 2],
                  [2, 2, 1, 0]])
# Counted pixels (label, pred): (0,0) (0,1) (1,1) (2,2) (1,2) (1,1); the two 255s are skipped.
EXPECTED = np.array([[1, 1, 0],
                     [0, 2, 1],
                     [0, 0, 1]])


class ConfusionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_confusion_matrix_skips_ignore_label(self):
    fn = self.variant(lambda p, l: metrics.confusion_matrix(p, l, 3, 255))
    cm = fn(jnp.asarray(PREDS), jnp.asarray(LABELS))
    chex.assert_trees_all_equal(np.asarray(cm), EXPECTED)

  def test_without_ignore_label_out_of_range_labels_are_still_skipped(self):
    cm = metrics.confusion_matrix(jnp.asarray(PREDS), jnp.asarray(LABELS), 3)
    np.testing.assert_array_equal(cm, EXPECTED)

  def test_classification_vectors_and_vmap(self):
    preds = jnp.array([[0, 1], [1, 1]])
    labels = jnp.array([[0, 0], [1, 255]])
    per_sample = jax.vmap(lambda p, l: metrics.confusion_matrix(p, l, 2, 255))(preds, labels)
    np.testing.assert_array_equal(per_sample, [[[1, 1], [0, 0]], [[0, 0], [0, 1]]])


def test_accuracy_iou_and_miou_by_hand():
  assert metrics.accuracy(EXPECTED) == pytest.approx(4 / 6)
  # IoU = TP / (row sum + column sum - TP): class 0: 1/(2+1-1); class 1: 2/(3+3-2);
  # class 2: 1/(1+2-1).
  np.testing.assert_allclose(metrics.per_class_iou(EXPECTED), [1 / 2, 2 / 4, 1 / 2])
  assert metrics.mean_iou(EXPECTED) == pytest.approx((0.5 + 0.5 + 0.5) / 3)


def test_absent_class_is_nan_and_left_out_of_the_mean():
  cm = np.array([[3, 1, 0],
                 [0, 2, 0],
                 [0, 0, 0]])  # Class 2 is neither in the labels nor predicted.
  iou = metrics.per_class_iou(cm)
  np.testing.assert_allclose(iou[:2], [3 / 4, 2 / 3])
  assert np.isnan(iou[2])
  assert metrics.mean_iou(cm) == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_predicted_but_absent_class_counts_as_zero_iou():
  cm = np.array([[1, 1],
                 [0, 0]])  # Class 1 predicted once, never labelled: IoU 0, not NaN.
  np.testing.assert_allclose(metrics.per_class_iou(cm), [0.5, 0.0])
  assert metrics.mean_iou(cm) == pytest.approx(0.25)


def test_empty_confusion_matrix():
  cm = np.zeros((2, 2), np.int64)
  assert metrics.accuracy(cm) == 0.0 and np.isnan(metrics.mean_iou(cm))
