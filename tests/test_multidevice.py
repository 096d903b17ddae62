"""8 fake CPU devices (one fresh process, tests/multidevice_check.py): sharded == one device."""


def test_sharded_scorer_on_8_cpu_devices_equals_single_device(eight_device_output):
  """tests/multidevice_check.py in a fresh process with 8 fake CPU devices."""
  stdout = eight_device_output
  assert 'devices=8' in stdout and 'sharded == single: OK' in stdout


def test_data_parallel_training_on_8_devices_matches_one_device(eight_device_output):
  """tests/multidevice_train_check.py, run by multidevice_check.py with 8 fake CPU devices."""
  stdout = eight_device_output
  assert 'devices=8' in stdout and 'data parallel == single device: OK' in stdout


def test_blocked_filter_gradient_on_8_devices_matches_one_device(eight_device_output):
  """tod_jax.conv's loop over batch chunks keeps the batch sharded: one all-reduce at the end."""
  assert 'blocked conv sharded == single: OK' in eight_device_output
