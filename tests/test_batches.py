"""The one batch planner (every way it draws, a training epoch, host blocks) and how batches
reach the devices."""

import jax
import numpy as np
import pytest

from conftest import make_tiny_config
from tod_jax import batches, datasets, host_pool
from tod_jax.errors import ConfigError


def test_steps_per_epoch_tops_up_the_last_batch():
  assert [batches.steps_per_epoch(n, 32) for n in (1, 32, 33, 64, 0)] == [1, 1, 2, 2, 1]


def test_each_way_to_draw_by_hand():
  indices = np.array([10, 11, 12])
  # 'cycle': one shuffle, repeated from its start.
  drawn = batches.draw(np.random.default_rng(0), indices, 7, 'cycle')
  shuffle = np.random.default_rng(0).permutation(indices)
  np.testing.assert_array_equal(drawn, np.concatenate([shuffle, shuffle, shuffle[:1]]))
  # 'passes': a new shuffle for every pass.
  rng = np.random.default_rng(0)
  expected = np.concatenate([rng.permutation(indices) for _ in range(3)])[:7]
  np.testing.assert_array_equal(batches.draw(np.random.default_rng(0), indices, 7, 'passes'),
                                expected)
  # 'random': without replacement while the indices suffice, then with.
  two = batches.draw(np.random.default_rng(0), indices, 3, 'random')
  assert sorted(two) == [10, 11, 12]
  assert np.isin(batches.draw(np.random.default_rng(0), indices, 9, 'random'), indices).all()
  # 'replace': with replacement always (drawn, with overwhelming odds, twice somewhere).
  many = batches.draw(np.random.default_rng(0), np.arange(50), 50, 'replace')
  assert len(np.unique(many)) < 50
  with pytest.raises(ValueError, match="Unknown way to draw 'sorted'"):
    batches.draw(np.random.default_rng(0), indices, 2, 'sorted')


def test_an_epoch_draws_what_training_always_drew():
  """A run's batches must not change: the labeled set shuffled and cycled into [steps, batch],
  then each step's unlabeled batch by one choice over the unlabeled pool."""
  config = make_tiny_config()  # batch 32, unlabeled 16, semi.
  labeled, unlabeled = np.arange(0, 70), np.arange(100, 1000)
  order, unl = batches.epoch(np.random.default_rng(3), labeled, unlabeled, config,
                             np.zeros((1000, 1)), None)
  rng = np.random.default_rng(3)
  np.testing.assert_array_equal(order, np.resize(rng.permutation(labeled), 96).reshape(3, 32))
  np.testing.assert_array_equal(np.stack(unl), rng.choice(unlabeled, size=(3, 16), replace=False))
  assert order.dtype == np.int32 and unl[0].dtype == np.int32
  config.semi = False
  order, unl = batches.epoch(np.random.default_rng(3), labeled, unlabeled, config,
                             np.zeros((1000, 1)), None)
  assert unl == [None] * 3 and order.shape == (3, 32)


def test_by_block_puts_each_blocks_samples_on_its_rows():
  bounds = host_pool.block_bounds(100, 2)
  labeled = np.array([1, 5, 20, 49, 50, 61, 77, 80, 99])
  rows = [np.array([0, 1]), np.array([2, 3])]
  order = batches.by_block(np.random.default_rng(0), labeled, bounds, rows, 5, 4, 'cycle')
  assert order.shape == (5, 4)
  assert np.isin(order, labeled).all()
  assert (order[:, :2] < 50).all() and (order[:, 2:] >= 50).all()
  # An epoch over each block: block 0's 4 samples appear in the first 2 steps, once each.
  np.testing.assert_array_equal(np.sort(order[:2, :2].ravel()), [1, 5, 20, 49])
  with pytest.raises(ConfigError, match='Process 1 holds none of the labeled'):
    batches.by_block(np.random.default_rng(0), labeled[:4], bounds, rows, 2, 4, 'cycle')


def test_keeps_data_on_device_by_size(tiny_config):
  ds = datasets.load_digits()
  size = ds.train_images.nbytes + ds.train_labels.nbytes
  tiny_config.device_data_max_bytes = size
  assert batches.keeps_data_on_device(tiny_config, ds)
  tiny_config.device_data_max_bytes = size - 1
  assert not batches.keeps_data_on_device(tiny_config, ds)
  tiny_config.data_on_device = 'always'
  assert batches.keeps_data_on_device(tiny_config, ds)
  tiny_config.data_on_device = 'yes'
  with pytest.raises(ValueError, match="'auto', 'always', 'never'"):
    batches.keeps_data_on_device(tiny_config, ds)


def test_prefetch_to_device_reads_two_ahead_and_keeps_order():
  from tod_jax import sharded_map  # pylint: disable=import-outside-toplevel
  pulled = []

  def host_batches():
    for i in range(5):
      pulled.append(i)
      yield {'x': np.full((2, 3), i, np.int32)}

  sharding = jax.sharding.NamedSharding(sharded_map.make_mesh(),
                                        jax.sharding.PartitionSpec(sharded_map.DATA_AXIS))
  stream = batches.prefetch_to_device(host_batches(), sharding)
  first = next(stream)
  assert pulled == [0, 1]  # The next batch is already on its way.
  assert isinstance(first['x'], jax.Array) and first['x'].sharding == sharding
  rest = list(stream)
  assert [int(b['x'][0, 0]) for b in [first] + rest] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize('steps,per,done,stops,expected', [
    (7, 4, 0, (), [(0, 4), (4, 5), (5, 6), (6, 7)]),  # Blocks of exactly 4, then singles.
    (8, 4, 0, (), [(0, 4), (4, 8)]),
    (5, 1, 0, (), [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    (8, 4, 0, (1,), [(0, 1), (1, 5), (5, 6), (6, 7), (7, 8)]),  # State after step 1 seen.
    (8, 4, 10, (13,), [(0, 1), (1, 2), (2, 3), (3, 7), (7, 8)]),  # Counts go on from `done`.
    (8, 4, 0, (4, 8), [(0, 4), (4, 8)]),  # A stop at a block's end splits nothing.
])
def test_dispatches_are_blocks_of_k_or_single_steps_ending_at_every_stop(steps, per, done,
                                                                         stops, expected):
  plan = batches.dispatches(steps, per, done, stops)
  assert plan == expected
  assert [a for a, _ in plan] == [0] + [b for _, b in plan[:-1]]
  assert all(b - a in (1, per) for a, b in plan)
