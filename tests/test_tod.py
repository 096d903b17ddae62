"""The paper's equations against hand-computed values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tod_jax import tod


class TodTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_output_discrepancy_eq1_eq5(self):
    a = jnp.array([[3.0, 0.0], [1.0, 1.0]])
    b = jnp.array([[0.0, 4.0], [1.0, 1.0]])
    d = self.variant(tod.output_discrepancy)(a, b)
    chex.assert_shape(d, (2,))
    chex.assert_trees_all_close(d, jnp.array([5.0, 0.0]))  # sqrt(9 + 16), identical rows.

  def test_output_discrepancy_dense_outputs_reduce_all_but_batch(self):
    a = jnp.ones((2, 3, 4, 5))
    d = tod.output_discrepancy(a, jnp.zeros_like(a))
    chex.assert_trees_all_close(d, jnp.full((2,), np.sqrt(60.0)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_test_discrepancy_eq10(self):
    out = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    base = jnp.array([[0.0, 0.0], [0.5, 0.5], [0.0, 3.0]])
    chex.assert_trees_all_close(tod.squared_output_discrepancy(out, base),
                                jnp.array([1.0, 0.0, 4.0]))
    # Mean over the test set of squared norms: (1 + 0 + 4) / 3.
    chex.assert_trees_all_close(self.variant(tod.test_discrepancy)(out, base), 5.0 / 3.0)

  def test_unsupervised_tod_loss_eq7(self):
    out = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    ema = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    # Mean over samples of squared norms: (1 + 4 + 9) / 2.
    chex.assert_trees_all_close(tod.unsupervised_tod_loss(out, ema), 7.0)

  def test_unsupervised_loss_does_not_flow_into_baseline(self):
    out, ema = jnp.array([[1.0, 2.0]]), jnp.array([[0.5, 0.5]])
    g_ema = jax.grad(lambda e: tod.unsupervised_tod_loss(out, e))(ema)
    g_out = jax.grad(lambda o: tod.unsupervised_tod_loss(o, ema))(out)
    chex.assert_trees_all_close(g_ema, jnp.zeros_like(ema))
    chex.assert_trees_all_close(g_out, 2 * (out - ema))

  def test_supervised_loss_eq8(self):
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    labels = jnp.array([0, 2])
    expected = -(np.log(0.5) + np.log(0.8)) / 2
    chex.assert_trees_all_close(tod.supervised_loss(logits, labels), expected, rtol=1e-6)

  def test_supervised_loss_eq8_skips_ignore_label_pixels(self):
    # [1, 1, 3, 2] logits: three pixels, two classes; the middle pixel is ignored.
    probs = jnp.array([[[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]])
    labels = jnp.array([[[0, 255, 1]]])
    expected = -(np.log(0.5) + np.log(0.8)) / 2  # Mean over the two counted pixels.
    chex.assert_trees_all_close(tod.supervised_loss(jnp.log(probs), labels, ignore_label=255),
                                expected, rtol=1e-6)
    grads = jax.grad(lambda z: tod.supervised_loss(z, labels, ignore_label=255))(jnp.log(probs))
    chex.assert_trees_all_close(grads[0, 0, 1], jnp.zeros(2))
    all_ignored = jnp.full_like(labels, 255)
    chex.assert_trees_all_close(tod.supervised_loss(probs, all_ignored, ignore_label=255), 0.0)

  def test_unsupervised_tod_loss_eq7_per_pixel(self):
    out = jnp.zeros((2, 1, 2, 3))
    ema = out.at[0, 0, 0].set(jnp.array([1.0, 2.0, 2.0])).at[1, 0, 1, 0].set(4.0)
    # Squared norms over classes per pixel: 9, 0, 0, 16; mean over the 4 pixels.
    chex.assert_trees_all_close(tod.unsupervised_tod_loss(out, ema), 25.0 / 4)

  def test_overall_loss_eq9(self):
    chex.assert_trees_all_close(tod.overall_loss(1.5, 4.0, 0.05), 1.7)

  def test_model_output(self):
    logits = jnp.array([[0.0, np.log(3.0)]])
    chex.assert_trees_all_close(tod.model_output(logits, 'softmax'), jnp.array([[0.25, 0.75]]))
    chex.assert_trees_all_equal(tod.model_output(logits, 'logits'), logits)
    with pytest.raises(ValueError, match='Unknown model output'):
      tod.model_output(logits, 'probs')

  def test_ema_update_eq6(self):
    params = {'w': jnp.array([1.0, 2.0]), 'b': jnp.array(4.0)}
    ema = {'w': jnp.array([3.0, 0.0]), 'b': jnp.array(0.0)}
    new = tod.ema_update(params, ema, 0.75)
    chex.assert_trees_all_close(new, {'w': jnp.array([2.5, 0.5]), 'b': jnp.array(1.0)})

  def test_ema_decay_schedule(self):
    chex.assert_trees_all_close(tod.ema_decay(1, 0.999, warmup=True), 0.5)
    chex.assert_trees_all_close(tod.ema_decay(3, 0.999, warmup=True), 0.75)
    chex.assert_trees_all_close(tod.ema_decay(10**6, 0.999, warmup=True), 0.999)
    chex.assert_trees_all_close(tod.ema_decay(1, 0.999, warmup=False), 0.999)

  def test_ema_warmup_is_true_average(self):
    """With warm-up, the EMA after k steps is the plain mean of the k iterates."""
    iterates = [jnp.array(v) for v in (2.0, 4.0, 9.0)]
    ema = jnp.array(0.0)
    for step, w in enumerate(iterates, start=0):
      ema = tod.ema_update(w, ema, tod.ema_decay(step, 0.999, warmup=True))
    chex.assert_trees_all_close(ema, 5.0)
