"""JAX's persistent compilation cache: compiled programs kept on disk, so a second run (or
process) of the same model loads them instead of compiling again.

config.compilation_cache_dir: 'auto' (the default) uses $JAX_COMPILATION_CACHE_DIR if set,
else $XDG_CACHE_HOME/tod_jax/jax (~/.cache/tod_jax/jax); '' turns the cache off; any other
value is the directory. Set before the first compilation (devices.setup_devices).
The cache is trusted code: keep it where only you can write.
"""

import os
from typing import Optional

import jax

AUTO = 'auto'
# Programs that compile faster than this are not written (JAX's default is 1 s; the digits
# CNN's steps compile in less, and reading one back costs little).
MIN_COMPILE_SECONDS = 0.2


def default_dir(environ: Optional[dict] = None) -> str:
  """$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/tod_jax/jax (default ~/.cache)."""
  environ = os.environ if environ is None else environ
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']
  base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tod_jax', 'jax')


def resolve(setting: str, environ: Optional[dict] = None) -> str:
  """The cache directory of config.compilation_cache_dir ('' : none)."""
  return default_dir(environ) if setting == AUTO else os.path.expanduser(setting)


def enable(setting: str) -> str:
  """Points JAX's persistent cache at resolve(setting), or turns it off for ''; returns the
  directory ('' when off)."""
  directory = resolve(setting)
  jax.config.update('jax_compilation_cache_dir', directory or None)
  if directory:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory
