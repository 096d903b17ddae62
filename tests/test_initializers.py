"""param_init: PyTorch's layer initialisation against hand-computed bounds, flax's unchanged."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tod_jax import cycle, datasets, driver, initializers, models, rundir, train_state
from tod_jax.configs import default
from tod_jax.errors import ConfigError


def _tiny_resnet_params():
  model = models.ResNet(num_classes=10, stage_sizes=(1, 1), widths=(8, 16))
  return model, train_state.init_variables(model, jax.random.PRNGKey(0), (8, 8, 3))['params']


def test_pytorch_draws_uniform_within_one_over_sqrt_fan_in():
  params = {'Dense_0': {'kernel': jnp.zeros((4, 3)), 'bias': jnp.zeros((3,))},
            'Conv_0': {'kernel': jnp.zeros((3, 3, 2, 5))},
            'big': {'kernel': jnp.zeros((256, 256))}}
  out = initializers.pytorch(params, jax.random.PRNGKey(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(out, params)
  # fan_in 4 -> bound 1/2 (kernel and bias alike); a 3x3 conv from 2 channels: 1/sqrt(18).
  for leaf, bound in ((out['Dense_0']['kernel'], 0.5), (out['Dense_0']['bias'], 0.5),
                      (out['Conv_0']['kernel'], 1 / math.sqrt(18))):
    assert float(jnp.max(jnp.abs(leaf))) <= bound
    assert float(jnp.std(leaf)) > 0
  # U(-b, b) has variance b^2 / 3: 65,536 draws with b = 1/16.
  np.testing.assert_allclose(float(jnp.var(out['big']['kernel'])), (1 / 16) ** 2 / 3, rtol=0.03)
  np.testing.assert_allclose(float(jnp.max(jnp.abs(out['big']['kernel']))), 1 / 16, rtol=1e-3)


def test_pytorch_norm_layers_start_at_one_and_zero_and_flax_is_unchanged():
  _, params = _tiny_resnet_params()
  flat = traverse_util.flatten_dict(params)
  zero_scales = [p for p in flat if p[-1] == 'scale' and not np.any(flat[p])]
  assert zero_scales  # Flax's ResNet starts each block's last BatchNorm at scale 0 ...
  out = traverse_util.flatten_dict(initializers.apply('pytorch', params, jax.random.PRNGKey(1)))
  for path, leaf in out.items():  # ... PyTorch's BatchNorm2d at scale 1, bias 0.
    if 'BatchNorm' in path[-2]:
      np.testing.assert_array_equal(leaf, 1.0 if path[-1] == 'scale' else 0.0)
  chex.assert_trees_all_equal(initializers.apply('flax', params, jax.random.PRNGKey(1)), params)
  again = initializers.apply('pytorch', params, jax.random.PRNGKey(1))
  chex.assert_trees_all_equal(traverse_util.unflatten_dict(out), again)  # Deterministic.


def test_pytorch_initial_softmax_is_flat():
  """What COD's first cycle relies on: the initial network hardly prefers any class."""
  model = models.create_model('small_cnn', 10)
  x = jax.random.normal(jax.random.PRNGKey(3), (64, 8, 8, 1))
  deviation = {}
  for scheme in initializers.SCHEMES:
    variables = train_state.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1),
                                           param_init=scheme)
    p = jax.nn.softmax(model.apply(variables, x, train=False))
    deviation[scheme] = float(jnp.mean(jnp.sum((p - 0.1) ** 2, axis=-1)))
  assert deviation['pytorch'] < 2e-3
  assert deviation['pytorch'] < deviation['flax'] / 5


def test_runs_get_the_scheme_and_old_runs_keep_flax(tmp_path):
  config = default.get_config()
  config.dataset, config.model = 'digits', 'small_cnn'
  dataset = datasets.load_dataset(config)
  model = models.create_model('small_cnn', dataset.num_classes)
  ours, _ = cycle.initial_variables(config, model, dataset)
  config.param_init = 'flax'
  flax_vars, _ = cycle.initial_variables(config, model, dataset)
  bound = 1 / math.sqrt(3 * 3 * 1)  # The first conv: 3x3 from one channel.
  assert float(jnp.max(jnp.abs(ours['params']['Conv_0']['kernel']))) <= bound
  assert float(jnp.max(jnp.abs(flax_vars['params']['Conv_0']['kernel']))) > bound
  assert default.get_config().param_init == 'pytorch'
  config.param_init = 'torch'
  with pytest.raises(ConfigError, match="Unknown param_init 'torch'; set --config.param_init"):
    driver.validate_config(config)
  # A run saved before the field existed was initialised as flax initialises.
  saved = json.loads(default.get_config().to_json())
  del saved['param_init']
  (tmp_path / rundir.CONFIG).write_text(json.dumps(saved))
  assert rundir.saved_config(str(tmp_path)).param_init == 'flax'
