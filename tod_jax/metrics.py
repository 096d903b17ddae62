"""Evaluation metrics from a confusion matrix: accuracy, per-class IoU, mean IoU.

`confusion_matrix` runs inside jit on one sample's predictions (any shape);
the rest are pure NumPy on the summed matrix. Rows are true classes, columns
predicted classes; pixels whose label is the ignore label are not counted.
"""

from typing import Optional

import chex
import jax.numpy as jnp
import numpy as np


def confusion_matrix(predictions: chex.Array, labels: chex.Array, num_classes: int,
                     ignore_label: Optional[int] = None) -> chex.Array:
  """[classes, classes] int32 counts of (label, prediction) pairs.

  Args:
    predictions: int [...], predicted class per element (pixel or sample).
    labels: int [...], same shape; `ignore_label` entries are skipped.
    num_classes: number of classes C (labels other than ignore_label are in [0, C)).
    ignore_label: label value to skip, or None.
  """
  chex.assert_equal_shape([predictions, labels])
  labels = labels.reshape(-1).astype(jnp.int32)
  predictions = predictions.reshape(-1).astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  if ignore_label is not None:
    valid &= labels != ignore_label
  flat = jnp.where(valid, labels * num_classes + predictions, 0)
  counts = jnp.bincount(flat, weights=valid.astype(jnp.int32), length=num_classes**2)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def accuracy(confusion: np.ndarray) -> float:
  """Fraction of counted elements predicted correctly (pixel accuracy for segmentation)."""
  confusion = np.asarray(confusion, np.float64)
  return float(np.trace(confusion) / max(confusion.sum(), 1.0))


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
  """IoU_k = TP_k / (TP_k + FP_k + FN_k); NaN for a class absent from labels and predictions."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - tp
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, tp / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
  """Mean of the per-class IoUs over the classes that occur (labels or predictions)."""
  iou = per_class_iou(confusion)
  return float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan')
