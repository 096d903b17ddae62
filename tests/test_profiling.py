"""config.profile_dir: a jax.profiler trace of cycle 1's second epoch."""

import glob
import os

import pytest

from tod_jax import driver, profiling
from tod_jax.errors import ConfigError


@pytest.mark.parametrize('num_epochs,expected', [(1, 0), (2, 1), (200, 1)])
def test_the_second_epoch_is_traced_or_the_only_one(num_epochs, expected):
  assert profiling.profiled_epoch(num_epochs) == expected


def test_a_run_writes_one_trace_of_cycle_1s_second_epoch(tiny_config, tmp_path):
  profile_dir = tmp_path / 'profile'
  tiny_config.profile_dir = str(profile_dir)  # 2 cycles of 2 epochs.
  driver.run(tiny_config, str(tmp_path / 'run'))
  traces = glob.glob(os.path.join(profile_dir, 'plugins', 'profile', '*', '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert len(os.listdir(profile_dir / 'plugins' / 'profile')) == 1  # One epoch, one trace.


def test_no_trace_without_a_profile_dir(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(profiling.jax.profiler, 'trace', None)  # Would fail if called.
  tiny_config.num_cycles, tiny_config.num_epochs = 1, 2
  driver.run(tiny_config, str(tmp_path / 'run'))


def test_a_non_string_profile_dir_is_one_config_error(tiny_config):
  tiny_config.profile_dir = None
  with pytest.raises(ConfigError, match=r'profile_dir None is not a directory; set '
                                        r'--config.profile_dir'):
    driver.validate_config(tiny_config)
