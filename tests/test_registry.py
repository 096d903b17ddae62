"""Registries of strategies, models and datasets: a name is registered once."""

import pytest

from tod_jax import datasets, models, registry, strategies
from tod_jax.errors import ConfigError


@pytest.mark.parametrize('table,name', [(strategies.STRATEGIES, 'cod'),
                                        (models.MODELS, 'small_cnn'),
                                        (datasets.DATASETS, 'digits')])
def test_a_name_registered_twice_is_refused(table, name):
  before = table.get(name)
  with pytest.raises(ValueError, match=f"named '{name}' is already registered"):
    table.register(name, object())
  assert table.get(name) is before  # The built-in part is untouched.


def test_unknown_name_names_the_config_field_and_the_choices():
  table = registry.Registry('widget', 'widget_name')
  table.register('b', 2)
  table.register('a', 1)
  assert list(table) == ['a', 'b'] and 'a' in table and len(table) == 2
  with pytest.raises(ConfigError, match=r"Unknown widget 'c'; set --config.widget_name to one "
                     r"of \['a', 'b'\]"):
    table.get('c')


def test_register_strategy_and_model_from_user_code():
  with strategies.STRATEGIES.scoped():
    strategies.register('always_first')(
        lambda ctx, budget: strategies.QueryResult(ctx.query_pool[:budget]))
    assert 'always_first' in strategies.STRATEGIES
  assert 'always_first' not in strategies.STRATEGIES  # Gone once the scope ends.
  with pytest.raises(ValueError, match='already registered'):
    models.register_model('resnet18', lambda **kw: None)
