"""JAX's persistent compilation cache: where it goes, and a second process reuses it."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, cpu_env
from tod_jax import compilation_cache, driver
from tod_jax.errors import ConfigError


@pytest.mark.parametrize('setting,environ,expected', [
    ('auto', {'HOME': '/home/me'}, '/home/me/.cache/tod_jax/jax'),
    ('auto', {'XDG_CACHE_HOME': '/xdg'}, '/xdg/tod_jax/jax'),
    ('auto', {'JAX_COMPILATION_CACHE_DIR': '/mine', 'XDG_CACHE_HOME': '/xdg'}, '/mine'),
    ('', {'JAX_COMPILATION_CACHE_DIR': '/mine'}, ''),
    ('/somewhere', {'XDG_CACHE_HOME': '/xdg'}, '/somewhere'),
])
def test_the_cache_directory_of_each_setting(setting, environ, expected, monkeypatch):
  monkeypatch.setenv('HOME', environ.get('HOME', '/home/me'))
  assert compilation_cache.resolve(setting, environ) == expected


def test_a_non_string_directory_is_one_config_error(tiny_config):
  tiny_config.compilation_cache_dir = None
  with pytest.raises(ConfigError, match=r"compilation_cache_dir None .*--config.compilation_cache_dir"):
    driver.validate_config(tiny_config)


# A 1-cycle, 1-epoch digits run in a fresh process; prints how many compiled programs it
# read from the persistent cache.
_RUN = '''
import sys
sys.path.insert(0, sys.argv[3])
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda name, **_: hits.append(name) if name == '/jax/compilation_cache/cache_hits' else None)
from conftest import make_tiny_config
from tod_jax import driver
config = make_tiny_config()
config.num_cycles, config.num_epochs, config.compilation_cache_dir = 1, 1, sys.argv[1]
driver.setup_devices(config)
driver.run(config, sys.argv[2])
print('HITS', len(hits))
'''


def test_a_second_process_reads_what_the_first_compiled(tmp_path):
  cache = tmp_path / 'cache'
  env = cpu_env()
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  runs = []
  for name in ('first', 'second'):
    out = subprocess.run([sys.executable, '-c', _RUN, str(cache), str(tmp_path / name),
                          os.path.join(ROOT, 'tests')],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    runs.append((int(out.stdout.split('HITS')[-1]), sorted(os.listdir(cache))))
  (first_hits, first_entries), (second_hits, second_entries) = runs
  assert first_hits == 0 and first_entries  # The first process wrote the cache...
  # ...the second read them back (programs near the time threshold may be written by
  # either process, so the count is not exact) and kept every entry.
  assert second_hits >= len(first_entries) // 2, (second_hits, first_entries)
  assert set(first_entries) <= set(second_entries)
