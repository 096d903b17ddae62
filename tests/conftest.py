"""Shared test setup: the repo root on sys.path (for `configs`), tiny run configs, the
environment of subprocesses, the precision of math tests."""

import contextlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def subprocess_env(**changes: str) -> dict:
  """This process's environment for a subprocess, with the repo root added to PYTHONPATH
  (never replacing it: an environment may bring its packages through PYTHONPATH)."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH', '')) if p)
  return dict(os.environ, PYTHONPATH=path, **changes)


def cpu_env(**changes: str) -> dict:
  """subprocess_env for a check of CPU behaviour: JAX on the CPU, whatever the machine has."""
  return subprocess_env(JAX_PLATFORMS='cpu', **changes)


def make_tiny_config():
  """The digits config cut down to seconds: 2 cycles, 2 epochs."""
  from configs import digits  # pylint: disable=import-outside-toplevel
  config = digits.get_config()
  config.num_cycles = 2
  config.num_epochs = 2
  config.batch_size = 32
  config.unlabeled_batch_size = 16
  config.progress_bar = False
  config.tensorboard = False
  # Strategy 'vaal': tiny networks and batches.
  config.vaal.width, config.vaal.latent_size, config.vaal.discriminator_width = 4, 8, 16
  config.vaal.batch_size = 16
  return config


@pytest.fixture(scope='session')
def eight_device_output() -> str:
  """Stdout of tests/multidevice_check.py (sharded scoring and data-parallel training against
  one device), run once per session in a fresh process with 8 fake CPU devices.

  Fails the calling test with the script's output if it exits non-zero.
  """
  import subprocess  # pylint: disable=import-outside-toplevel
  env = cpu_env(XLA_FLAGS='--xla_force_host_platform_device_count=8')
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'multidevice_check.py')],
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


def _run_xla_flags() -> None:
  """The XLA flags a run sets (devices.setup_devices), set before JAX starts: on a GPU the
  suite runs with deterministic kernels, as runs do."""
  import jaxlib.version  # pylint: disable=import-outside-toplevel
  from tod_jax import devices  # pylint: disable=import-outside-toplevel
  os.environ['XLA_FLAGS'] = devices.xla_flags(
      make_tiny_config(), os.environ.get('XLA_FLAGS', ''), jaxlib.version.__version__,
      large_model=False)


_run_xla_flags()


def _compilation_cache() -> None:
  """The suite's persistent compilation cache: $JAX_COMPILATION_CACHE_DIR if set, else one
  directory per user under the system's temporary directory (never the user's own cache),
  shared by the workers and by every subprocess (they inherit the variable), kept between
  sessions; docs/results.md ("Persistent compilation cache") has the suite's time with it cold
  and warm."""
  import tempfile  # pylint: disable=import-outside-toplevel
  from tod_jax import compilation_cache  # pylint: disable=import-outside-toplevel
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
      tempfile.gettempdir(), f'tod_jax_test_compilation_cache_{os.getuid()}'))
  compilation_cache.enable(compilation_cache.AUTO)


_compilation_cache()


@pytest.fixture
def tiny_config():
  return make_tiny_config()


@pytest.fixture(autouse=True)
def _registries_as_found():
  """Every test leaves the registries of strategies, models and datasets as it found them."""
  from tod_jax import datasets, models, strategies  # pylint: disable=import-outside-toplevel
  with strategies.STRATEGIES.scoped(), models.MODELS.scoped(), datasets.DATASETS.scoped():
    yield


@pytest.fixture
def highest_precision():
  """Float32 matmuls and convolutions on every platform, for tests of math against NumPy or
  PyTorch: JAX's default is TF32 on recent GPUs and one bfloat16 pass on TPUs."""
  import jax  # pylint: disable=import-outside-toplevel
  with jax.default_matmul_precision('highest'):
    yield


@contextlib.contextmanager
def compilations():
  """Yields a list that gains one entry (its seconds) per XLA backend compilation in the block."""
  from jax import monitoring  # pylint: disable=import-outside-toplevel
  seen = []

  def listener(name, seconds, **_):
    if name == '/jax/core/compile/backend_compile_duration':
      seen.append(seconds)
  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    monitoring.unregister_event_duration_listener(listener)


def write_image_folder(root, seeds_per_class=4, unlabeled_per_class=12, test_per_class=3):
  """Writes a tiny image folder dataset of PNGs (varied sizes) under `root`; returns the
  true class of every written image by its sample id. Classes: 'cat' images are bright
  on the left half, 'dog' images on the right half."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  truth = {}
  for split, count in (('labeled', seeds_per_class), ('unlabeled', unlabeled_per_class),
                       ('test', test_per_class)):
    for label, name in enumerate(('cat', 'dog')):
      for i in range(count):
        height, width = 10 + i % 3, 12 - i % 2
        image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        half = slice(0, width // 2) if label == 0 else slice(width // 2, width)
        image[:, half] += 150
        folder = f'{split}/{name}' if split != 'unlabeled' else 'unlabeled'
        sample_id = f'{folder}/{name}_{i:02d}.png'
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        Image.fromarray(image).save(os.path.join(root, sample_id))
        truth[sample_id] = name
  return truth
