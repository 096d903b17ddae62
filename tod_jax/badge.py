"""BADGE's gradient embeddings, kept as two factors, and k-means++ seeding over them.

Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
Bounds" (ICLR 2020). A sample's embedding is the cross-entropy gradient at its
predicted label yhat = argmax p with respect to the last Dense layer's weights,

  g = a ⊗ h,  a = p - onehot(yhat) [K],  h = penultimate features [D]

(a K·D vector; the bias part is left out, as in the authors' code; the sign does
not change distances). Outer products factorise inner products,

  <g_i, g_j> = <a_i, a_j> <h_i, h_j>,  ||g_i||² = ||a_i||² ||h_i||²,

so every distance is computed from a [n, K] and h [n, D]: the n x K·D embeddings
(CIFAR-100 on ResNet-18: 51,200 floats per sample) are never built. Distances
||g_i||² + ||g_j||² - 2 <g_i, g_j> lose digits to cancellation: the strategy runs them
at config.precision.score ('highest' by default, tod_jax/precision.py).
"""

import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp

def gradient_embedding_factors(logits: chex.Array,
                               features: chex.Array) -> tuple[chex.Array, chex.Array]:
  """(a = softmax(logits) - onehot(argmax logits) [n, K], h = features [n, D]), float32.

  Classification only: logits [n, K], features [n, D].
  """
  chex.assert_rank([logits, features], 2)
  logits = jnp.asarray(logits, jnp.float32)
  predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  return jax.nn.softmax(logits, axis=-1) - predicted, jnp.asarray(features, jnp.float32)


def squared_norms(a: chex.Array, h: chex.Array) -> chex.Array:
  """||a_i ⊗ h_i||² = ||a_i||² ||h_i||². a [n, K], h [n, D] -> [n]."""
  return jnp.sum(jnp.square(a), axis=-1) * jnp.sum(jnp.square(h), axis=-1)


def squared_distances(a: chex.Array, h: chex.Array, center_a: chex.Array,
                      center_h: chex.Array) -> chex.Array:
  """||g_i - c_j||² = ||g_i||² + ||c_j||² - 2 <a_i, a'_j> <h_i, h'_j>, clamped at 0.

  Args:
    a, h: [n, K], [n, D] factors of the points g_i = a_i ⊗ h_i.
    center_a, center_h: [m, K], [m, D] factors a', h' of the centers c_j = a'_j ⊗ h'_j.
  Returns:
    [n, m] float32 squared distances.
  """
  chex.assert_equal_shape([a[0], center_a[0]])
  chex.assert_equal_shape([h[0], center_h[0]])
  inner = jnp.matmul(a, center_a.T) * jnp.matmul(h, center_h.T)
  sq = (squared_norms(a, h)[:, None] + squared_norms(center_a, center_h)[None, :]
        - 2.0 * inner)
  return jnp.maximum(sq, 0.0)


@functools.partial(jax.jit, static_argnames='budget')
def kmeans_plus_plus(a: chex.Array, h: chex.Array, key: chex.PRNGKey, budget: int,
                     valid: Optional[chex.Array] = None) -> chex.Array:
  """Positions of `budget` k-means++ seeds among the embeddings a_i ⊗ h_i.

  The first seed is the largest ||g|| (the authors' code; ties: the first); each
  next one is drawn with probability D(x)² / Σ D², D(x) the distance from x to its
  nearest seed so far. A seed has D = 0 and is never drawn again; if every
  remaining point has D = 0 (copies of seeds), the first unpicked one is taken.
  One [n] vector of D² is updated per pick: memory O(n (K + D)).

  Args:
    a, h: [n, K], [n, D] float32 factors (gradient_embedding_factors).
    key: PRNG key of the draws (step i uses fold_in(key, i)).
    budget: seeds to pick, at most the number of valid points.
    valid: [n] bool, False for padding rows (never picked); None: all valid.
  Returns:
    [budget] distinct int32 positions into a and h, in the order picked.
  """
  n = a.shape[0]
  if not 0 <= budget <= n:
    raise ValueError(f'Cannot pick {budget} seeds among {n} points.')
  if budget == 0:
    return jnp.zeros((0,), jnp.int32)
  valid = jnp.ones((n,), jnp.bool_) if valid is None else jnp.asarray(valid, jnp.bool_)

  def add_seed(j, min_sq, picked):
    to_j = squared_distances(a, h, a[j][None], h[j][None])[:, 0]
    return jnp.minimum(min_sq, to_j).at[j].set(0.0), picked.at[j].set(True)

  def pick(i, carry):
    min_sq, picked, seeds = carry
    # log 0 = -inf: seeds (and their copies) are never drawn.
    drawn = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(min_sq))
    j = jnp.where(jnp.any(min_sq > 0.0), drawn, jnp.argmin(picked)).astype(jnp.int32)
    return (*add_seed(j, min_sq, picked), seeds.at[i].set(j))

  first = jnp.argmax(jnp.where(valid, squared_norms(a, h), -1.0)).astype(jnp.int32)
  # Padding starts as picked, at distance 0: never drawn, never the fallback.
  min_sq, picked = add_seed(first, jnp.where(valid, jnp.inf, 0.0), ~valid)
  seeds = jnp.zeros((budget,), jnp.int32).at[0].set(first)
  return jax.lax.fori_loop(1, budget, pick, (min_sq, picked, seeds))[2]
