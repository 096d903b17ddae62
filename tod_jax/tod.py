"""The paper's equations (Huang et al., TNNLS 2022), in one place.

All functions are pure and work on per-sample model outputs `[batch, ...]`
(classification: `[batch, classes]`; segmentation: `[batch, H, W, classes]`).
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp
import optax

from tod_jax.errors import ConfigError


def model_output(logits: chex.Array, kind: str) -> chex.Array:
  """The output f(x) that the discrepancies compare: 'logits' or 'softmax'."""
  if kind == 'logits':
    return logits
  if kind == 'softmax':
    return jax.nn.softmax(logits, axis=-1)
  raise ConfigError(f"Unknown model output {kind!r}; use 'logits' or 'softmax' (--config.score_output, "
                    '--config.loss_output).')


def _sq_distance(a: chex.Array, b: chex.Array) -> chex.Array:
  chex.assert_equal_shape([a, b])
  diff = (a - b).astype(jnp.float32)
  return jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=-1)


# Eq. 1 (TOD) and Eq. 5 (COD): D(x) = ||f(x; w_a) - f(x; w_b)||_2.
def output_discrepancy(out_a: chex.Array, out_b: chex.Array) -> chex.Array:
  """Per-sample L2 distance between two outputs. [batch, ...] x 2 -> [batch]."""
  return jnp.sqrt(_sq_distance(out_a, out_b))


def squared_output_discrepancy(out_a: chex.Array, out_b: chex.Array) -> chex.Array:
  """Per-sample squared L2 distance ||f_a - f_b||^2. [batch, ...] x 2 -> [batch]."""
  return _sq_distance(out_a, out_b)


# Eq. 10: D^(i) = mean_{x in X_test} ||f(x; w^(i)) - f(x; w~^(i))||^2 (smaller is better).
def test_discrepancy(out: chex.Array, baseline_out: chex.Array) -> chex.Array:
  """Model-selection score of one candidate from its and its baseline's test outputs."""
  return jnp.mean(_sq_distance(out, baseline_out))


# Eq. 7: L_U(w) = mean_u ||f(x_u; w) - f(x_u; w_ema)||^2.
def unsupervised_tod_loss(out: chex.Array, ema_out: chex.Array) -> chex.Array:
  """Mean squared L2 distance to the (gradient-stopped) baseline output.

  The squared norm is taken over the class axis and averaged over every other
  axis: over samples for `[batch, classes]`, over samples and pixels for dense
  `[batch, H, W, classes]` outputs (Eq. 7 per pixel, so lambda weighs it against
  the per-pixel cross-entropy exactly as in classification).
  """
  chex.assert_equal_shape([out, ema_out])
  diff = (out - jax.lax.stop_gradient(ema_out)).astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(diff), axis=-1))


# Eq. 7 as the authors' code computes it (PyTorch mse_loss): mean over samples and classes.
def mean_squared_error(out: chex.Array, target: chex.Array) -> chex.Array:
  """mean((out - target)^2) over every axis; no gradient is stopped here."""
  chex.assert_equal_shape([out, target])
  return jnp.mean(jnp.square((out - target).astype(jnp.float32)))


# Eq. 8: L_S(w) = mean_s CE(f(x_s; w), y_s).
def supervised_loss(logits: chex.Array, labels: chex.Array,
                    ignore_label: Optional[int] = None) -> chex.Array:
  """Mean softmax cross-entropy over samples (and pixels), skipping `ignore_label`.

  Args:
    logits: [batch, ..., classes].
    labels: [batch, ...] int (e.g. [batch] or per-pixel [batch, H, W]).
    ignore_label: entries with this label add nothing and are not counted in the mean.
  """
  chex.assert_rank(labels, logits.ndim - 1)
  if ignore_label is None:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  valid = labels != ignore_label
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


# Eq. 9: L = L_S + lambda * L_U.
def overall_loss(sup: chex.Array, unsup: chex.Array, tod_weight: float) -> chex.Array:
  return sup + tod_weight * unsup


def ema_decay(step: chex.Numeric, alpha: float, warmup: bool) -> chex.Array:
  """alpha, or min(1 - 1/(step+1), alpha) (a true mean early on) with warmup."""
  if not warmup:
    return jnp.asarray(alpha, jnp.float32)
  return jnp.minimum(1.0 - 1.0 / (jnp.asarray(step, jnp.float32) + 1.0), alpha)


# Eq. 6: w_ema <- alpha * w_ema + (1 - alpha) * w.
def ema_update(params: chex.ArrayTree, ema_params: chex.ArrayTree,
               decay: chex.Numeric) -> chex.ArrayTree:
  return optax.incremental_update(params, ema_params, step_size=1.0 - decay)
