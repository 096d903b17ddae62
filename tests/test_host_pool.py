"""host_pool: pool blocks per process, block-aware batches (the 2-process run is in
test_multiprocess.py)."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tod_jax import batches, datasets, host_pool, sharded_map
from tod_jax.errors import ConfigError


def test_blocks_cover_the_pool_and_owners_follow_them():
  bounds = host_pool.block_bounds(10, 3)
  np.testing.assert_array_equal(bounds, [0, 3, 6, 10])
  np.testing.assert_array_equal(host_pool.owners([0, 2, 3, 5, 6, 9], bounds), [0, 0, 1, 1, 2, 2])
  positions = host_pool.split_by_owner(np.array([9, 0, 4, 3, 7]), bounds)
  assert [p.tolist() for p in positions] == [[1], [2, 3], [0, 4]]


def test_shard_reads_its_block_only():
  images = np.arange(10 * 2, dtype=np.uint8).reshape(10, 2)
  block = host_pool.shard(images, 1, 2)  # Rows [5, 10).
  assert (block.lo, block.hi, len(block), block.shape) == (5, 10, 10, (10, 2))
  got = block.take(np.array([7, 1, 9, 5]), rows=np.array([0, 2]))
  np.testing.assert_array_equal(got, [images[7], [0, 0], images[9], [0, 0]])
  with pytest.raises(IndexError, match=r'\[5, 10\)'):
    block.take(np.array([4, 7]), rows=np.array([0]))
  with pytest.raises(TypeError, match='take'):
    block[np.array([5])]  # pylint: disable=pointless-statement


def test_one_process_rows_and_gathered_blocks_are_everything():
  sharding = NamedSharding(sharded_map.make_mesh(), P('data'))
  n = 4 * jax.device_count()
  (rows,) = host_pool.process_rows(sharding, n)
  np.testing.assert_array_equal(rows, np.arange(n))
  labels = np.arange(7, dtype=np.int32)
  np.testing.assert_array_equal(host_pool.gather_blocks(labels, host_pool.block_bounds(7, 1)),
                                labels)


def test_scorer_over_a_one_block_pool_equals_the_plain_pool():
  """The host path of PoolMapper (one process: one block) gives the plain path's outputs."""
  ds = datasets.load_digits()
  mapper = sharded_map.PoolMapper(lambda scale, x: x.reshape(len(x), -1).sum(-1) * scale, 64)
  indices = np.random.default_rng(0).permutation(ds.pool_size)[:150]
  plain = mapper(2.0, ds.train_images.astype(np.float32), indices)
  block = host_pool.shard(ds.train_images.astype(np.float32), 0, 1)
  np.testing.assert_array_equal(mapper(2.0, block, indices), plain)


def test_host_pool_refuses_what_needs_the_whole_pool(tmp_path):
  ds = datasets.load_digits()
  sharded = dataclasses.replace(ds, train_images=host_pool.shard(ds.train_images, 0, 1))
  config = ml_collections.ConfigDict({'data_on_device': 'always', 'device_data_max_bytes': 2**30})
  with pytest.raises(ConfigError, match="data_on_device='always'"):
    batches.keeps_data_on_device(config, sharded)
  config.data_on_device = 'auto'
  assert not batches.keeps_data_on_device(config, sharded)
  from configs import digits  # pylint: disable=import-outside-toplevel
  from tod_jax import driver  # pylint: disable=import-outside-toplevel
  config = digits.get_config()
  config.strategy, config.distributed.host_pool = 'vaal', True
  with pytest.raises(ConfigError, match="'vaal'.*host_pool=False"):
    driver.validate_config(config)
