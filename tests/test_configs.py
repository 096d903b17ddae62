"""Every config file loads, validates and carries the paper's Table VIII values."""

import glob
import importlib
import json
import os

import ml_collections
import pytest

from configs import digits
from tod_jax import configs, datasets, driver, rundir
from tod_jax.configs import default
from tod_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))
CONFIGS = [c for c in CONFIGS if not c.endswith('__init__.py')]


def _load(path):
  return importlib.import_module(f'configs.{os.path.basename(path)[:-3]}').get_config()


def test_all_paper_configs_exist():
  names = {os.path.basename(c)[:-3] for c in CONFIGS}
  assert {'digits', 'cifar10', 'cifar100', 'fashion_mnist', 'svhn', 'caltech101',
          'stl10', 'cityscapes', 'synthetic_seg'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_loads_and_validates(path):
  config = _load(path)
  assert isinstance(config, ml_collections.ConfigDict)
  driver.validate_config(config)
  assert config.dataset in datasets.DATASETS
  # Table VIII: every dataset starts at 10%, adds 5% a cycle, 7 cycles, alpha/lambda
  # (the CPU-sized synthetic_seg runs 3 cycles).
  cycles = 3 if path.endswith('synthetic_seg.py') else 7
  assert (config.initial_fraction, config.budget_fraction, config.num_cycles) == (0.1, 0.05,
                                                                                   cycles)
  assert (config.ema_decay, config.tod_weight) == (0.999, 0.05)


def test_table_viii_per_dataset_values():
  by_name = {os.path.basename(c)[:-3]: _load(c) for c in CONFIGS}
  for name in ('cifar10', 'cifar100', 'fashion_mnist', 'svhn'):
    c = by_name[name]
    assert (c.learning_rate, c.num_epochs, c.batch_size, c.model) == (0.1, 200, 128, 'resnet18')
    assert (c.momentum, c.weight_decay, c.lr_decay_at) == (0.9, 5e-4, 0.8)
  c = by_name['caltech101']
  assert (c.learning_rate, c.num_epochs, c.batch_size) == (0.01, 50, 64)
  assert (by_name['stl10'].learning_rate, by_name['stl10'].batch_size) == (0.1, 64)

  c = by_name['cityscapes']
  assert (c.optimizer, c.learning_rate, c.num_epochs, c.batch_size) == ('adam', 5e-4, 40, 4)
  assert (c.model, c.crop_size, c.flip, c.dataset) == ('drn_d_22', 688, True, 'cityscapes')


def test_resume_tables_name_fields_of_the_defaults():
  """rundir's hand-kept tables against tod_jax/configs/default.py: every name in them is a
  field (or group) of today's config."""
  known = configs.known_fields()
  assert rundir.RESUMABLE_CHANGES <= known, rundir.RESUMABLE_CHANGES - known
  assert set(rundir.ADDED_FIELDS) <= known, set(rundir.ADDED_FIELDS) - known
  assert set(configs.RENAMED_FIELDS.values()) <= known
  assert not set(configs.RENAMED_FIELDS) & (known - {'distributed'})  # Old names only.


def test_changed_defaults_name_a_field_at_its_new_default():
  defaults = configs.flatten(json.loads(default.get_config().to_json()))
  for field, (old, new) in rundir.CHANGED_DEFAULTS.items():
    assert defaults[field] == new != old, field


def test_a_run_saved_at_an_old_default_resumes_with_its_saved_value(tmp_path):
  """A run saved with compute_dtype='float32' (the old default) resumes under today's
  'auto' as float32; one saved with 'bfloat16' is another run."""
  config = digits.get_config()
  assert config.compute_dtype == 'auto'
  saved = json.loads(config.to_json())
  saved['compute_dtype'] = 'float32'
  (tmp_path / rundir.CONFIG).write_text(json.dumps(saved))
  rundir.check_config(str(tmp_path), config)
  resumed = rundir.resumed_config(str(tmp_path), config)
  assert resumed.compute_dtype == 'float32' and config.compute_dtype == 'auto'
  assert resumed.to_dict() == {**config.to_dict(), 'compute_dtype': 'float32'}
  saved['compute_dtype'] = 'bfloat16'
  (tmp_path / rundir.CONFIG).write_text(json.dumps(saved))
  assert rundir.resumed_config(str(tmp_path), config) is config
  with pytest.raises(rundir.ConfigMismatchError, match="compute_dtype: 'bfloat16' there, 'auto'"):
    rundir.check_config(str(tmp_path), config)


def _old_layout(config) -> dict:
  """config.json as runs wrote it before the config groups: every field flat, old names."""
  old_names = {new: old for old, new in configs.RENAMED_FIELDS.items()}
  return {old_names.get(path, path): value
          for path, value in configs.flatten(json.loads(config.to_json())).items()
          if not path.startswith('precision.')}  # Added later, as a group.


def test_a_run_saved_before_the_groups_resumes_and_names_differences_by_path(tmp_path):
  config = digits.get_config()
  old = _old_layout(config)
  assert old['vaal_width'] == 32 and old['distributed'] is False and old['keep_outputs']
  (tmp_path / rundir.CONFIG).write_text(json.dumps(old))
  rundir.check_config(str(tmp_path), config)  # Resumable: the same run under today's names.
  assert rundir.saved_config(str(tmp_path)).vaal.width == 32
  config.vaal.width, config.distributed.timeout = 16, 5  # The second may change on resume.
  with pytest.raises(rundir.ConfigMismatchError, match=r'\(vaal\.width: 32 there, 16 now\)'):
    rundir.check_config(str(tmp_path), config)


def test_old_names_are_refused_with_the_new_one():
  config = digits.get_config()
  config.vaal_width, config.keep_outputs = 4, False  # A config file from before the groups.
  with pytest.raises(ConfigError, match=r"'keep_outputs' \(now 'kept_outputs.enabled'\), "
                                        r"'vaal_width' \(now 'vaal.width'\)"):
    configs.check_fields(config)
