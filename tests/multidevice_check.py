"""Run with 8 fake CPU devices (conftest.eight_device_output): sharded scoring (COD, logits,
accuracy, BADGE's factors and picks; segmentation COD, confusion, per-pixel entropy) == single
device,
then multidevice_train_check: data-parallel training == one device. One process for both.

Exits non-zero with a message if any check fails.
"""

import jax
import numpy as np

from tod_jax import badge, datasets, models, scoring, uncertainty
from tod_jax.sharded_map import make_mesh
from tod_jax.train_state import init_variables


def main():
  devices = jax.devices()
  assert len(devices) == 8, f'expected 8 devices, got {len(devices)}'
  print(f'devices={len(devices)}')
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  a = init_variables(model, jax.random.PRNGKey(0), ds.image_shape)
  b = init_variables(model, jax.random.PRNGKey(1), ds.image_shape)
  indices = np.random.default_rng(0).permutation(ds.pool_size)[:333]  # Not a chunk multiple.
  sharded = scoring.Scorer(model, ds.mean, ds.std, 'softmax', 50, make_mesh(devices))
  single = scoring.Scorer(model, ds.mean, ds.std, 'softmax', 50, make_mesh(devices[:1]))
  assert sharded.mesh.size == 8 and sharded._cod.chunk_size == 56
  # The chunk really is split over all 8 devices.
  x = jax.device_put(ds.train_images[:56], sharded._cod.data_sharded)
  assert len(x.sharding.device_set) == 8 and x.addressable_shards[0].data.shape[0] == 7
  np.testing.assert_allclose(sharded.cod(a, b, ds.train_images, indices),
                             single.cod(a, b, ds.train_images, indices), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(sharded.logits(a, ds.test_images),
                             single.logits(a, ds.test_images), rtol=1e-5, atol=1e-5)
  assert sharded.accuracy(a, ds.test_images, ds.test_labels) == single.accuracy(
      a, ds.test_images, ds.test_labels)
  _check_badge(sharded, single, a, ds, indices)
  # Segmentation: per-image COD and the confusion matrix over (images, masks) pytrees.
  from tod_jax import synthetic_seg  # pylint: disable=import-outside-toplevel
  seg = synthetic_seg.load(num_train=21, num_test=13, size=16)
  seg_model = models.create_model('drn_tiny', seg.num_classes)
  sa = init_variables(seg_model, jax.random.PRNGKey(0), seg.image_shape)
  sb = jax.tree.map(lambda p: p * 1.1 + 0.01, sa)  # A second model, no second init compile.
  seg_sharded = scoring.Scorer(seg_model, seg.mean, seg.std, 'softmax', 8, make_mesh(devices))
  seg_single = scoring.Scorer(seg_model, seg.mean, seg.std, 'softmax', 8, make_mesh(devices[:1]))
  np.testing.assert_allclose(seg_sharded.cod(sa, sb, seg.train_images),
                             seg_single.cod(sa, sb, seg.train_images), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      seg_sharded.confusion(sa, seg.test_images, seg.test_labels, 5, 255),
      seg_single.confusion(sa, seg.test_images, seg.test_labels, 5, 255))
  # Per-pixel entropy, averaged per image inside the sharded function (21: a padded chunk).
  np.testing.assert_allclose(
      seg_sharded.uncertainty(sa, uncertainty.entropy, seg.train_images),
      seg_single.uncertainty(sa, uncertainty.entropy, seg.train_images), rtol=1e-5, atol=1e-6)
  print('sharded == single: OK')
  _check_blocked_conv(devices)
  import multidevice_train_check  # pylint: disable=import-outside-toplevel
  multidevice_train_check.check_training(devices)


def _check_badge(sharded, single, variables, ds, indices):
  """BADGE's gradient embedding factors (333: a padded chunk) and its k-means++ picks."""
  sharded_factors = sharded.gradient_embedding_factors(variables, ds.train_images, indices)
  single_factors = single.gradient_embedding_factors(variables, ds.train_images, indices)
  for got, want in zip(sharded_factors, single_factors):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(badge.kmeans_plus_plus(*sharded_factors, key, 40),
                                badge.kmeans_plus_plus(*single_factors, key, 40))


def _check_blocked_conv(devices):
  """conv.blocked_filter_grad on a batch split over 8 devices == one device, no all-gather."""
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  from tod_jax import conv  # pylint: disable=import-outside-toplevel
  from tod_jax.sharded_map import DATA_AXIS  # pylint: disable=import-outside-toplevel
  kx, kd = jax.random.split(jax.random.PRNGKey(0))
  x, dy = jax.random.normal(kx, (16, 16, 16, 8)), jax.random.normal(kd, (16, 16, 16, 4))
  sharded = NamedSharding(make_mesh(devices), PartitionSpec(DATA_AXIS))
  fn = jax.jit(conv.blocked_filter_grad)
  xs, dys = jax.device_put(x, sharded), jax.device_put(dy, sharded)
  assert xs.addressable_shards[0].data.shape[0] == 2
  hlo = fn.lower(xs, dys).compile().as_text()
  assert 'all-gather' not in hlo and hlo.count('all-reduce-start(') + hlo.count('all-reduce(') == 1
  one = [jax.device_put(a, devices[0]) for a in (x, dy)]
  np.testing.assert_allclose(fn(xs, dys), fn(*one), rtol=1e-5, atol=1e-5)
  print('blocked conv sharded == single: OK')


if __name__ == '__main__':
  main()
