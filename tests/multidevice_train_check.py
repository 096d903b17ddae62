"""With 8 fake CPU devices (run by multidevice_check.py): data-parallel training == one device.

Exits non-zero with a message if any check fails.
"""

import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # pylint: disable=wrong-import-position
from tod_jax import (augment, batches, datasets, loss_forms, models, train)  # pylint: disable=wrong-import-position
from tod_jax.sharded_map import DATA_AXIS, make_mesh  # pylint: disable=wrong-import-position
from tod_jax.train_state import create_optimizer, create_train_state, init_variables, lr_decay_step  # pylint: disable=wrong-import-position


def tiny_config():
  config = digits.get_config()
  config.num_cycles, config.num_epochs = 1, 1
  config.batch_size, config.unlabeled_batch_size = 32, 16
  config.progress_bar, config.tensorboard = False, False
  return config


def check_augmentation_is_sharding_invariant(ds, devices):
  """jax_threefry_partitionable: the same random crops and flips however the batch is split."""
  assert jax.config.jax_threefry_partitionable, 'jax_threefry_partitionable is off'
  key, images = jax.random.PRNGKey(3), ds.train_images[:64]
  outputs = []
  for mesh in (make_mesh(devices), make_mesh(devices[:1])):
    sharded = NamedSharding(mesh, P(DATA_AXIS))
    fn = jax.jit(lambda k, x: augment.augment(k, x, 1, True),
                 in_shardings=(NamedSharding(mesh, P()), sharded), out_shardings=sharded)
    outputs.append(np.asarray(fn(key, images)))
  np.testing.assert_array_equal(outputs[0], outputs[1])
  assert not np.array_equal(outputs[0], images)  # It did augment.


def train_once(config, ds, model, variables, mesh):
  """One epoch of 3 steps; returns (state, epoch metrics) as NumPy."""
  state = create_train_state(model, jax.tree.map(jnp.copy, variables), create_optimizer(config),
                             decay_step=lr_decay_step(config, 3))
  inputs = train.CycleInputs(ds, np.arange(96), np.arange(96, 400), np.random.default_rng(0),
                             jax.random.PRNGKey(0), cycle=1)
  state, metrics = train.train_cycle(state, inputs, config, mesh=mesh)
  tree = {'params': state.params, 'ema_params': state.ema_params,
          'batch_stats': state.batch_stats, 'ema_batch_stats': state.ema_batch_stats}
  return jax.tree.map(np.asarray, tree), metrics


def check_training(devices):
  ds = datasets.load_digits()
  check_augmentation_is_sharding_invariant(ds, devices)
  model = models.create_model('small_cnn', 10)
  config = tiny_config()
  variables = init_variables(model, jax.random.PRNGKey(0), ds.image_shape,
                             loss_forms.uses_consistency_head(config))
  assert batches.keeps_data_on_device(config, ds)
  # 8 devices, pool on the devices vs one device, streamed batches (test_train.py
  # checks both pipelines on one device, so this covers every combination).
  eight, m8 = train_once(config, ds, model, variables, make_mesh(devices))
  config.data_on_device = 'never'
  one, m1 = train_once(config, ds, model, variables, make_mesh(devices[:1]))
  # Float tolerance: the 8-way all-reduce sums in another order than one device.
  chex.assert_trees_all_close(eight, one, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(m8, m1, rtol=1e-5, atol=1e-6)
  assert not np.allclose(eight['params']['Dense_0']['kernel'],
                         variables['params']['Dense_0']['kernel'])  # It trained.
  config.batch_size = 20
  try:
    train.make_train_step(config, ds, make_mesh(devices))
    raise AssertionError('batch_size 20 on 8 devices did not raise')
  except ValueError as e:
    assert 'multiples of 8' in str(e), e
  print('data parallel == single device: OK')


def main():
  devices = jax.devices()
  assert len(devices) == 8, f'expected 8 devices, got {len(devices)}'
  print(f'devices={len(devices)}')
  check_training(devices)


if __name__ == '__main__':
  main()
