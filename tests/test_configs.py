"""Every config file loads, validates and carries the paper's Table VIII values."""

import glob
import importlib
import os

import ml_collections
import pytest

from tod_jax import datasets, driver

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
