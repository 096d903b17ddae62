"""The precision policy: each phase's functions are compiled at the level its config names."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from tod_jax import datasets, driver, models, precision, scoring, train
from tod_jax.errors import ConfigError
from tod_jax.sharded_map import make_mesh
from tod_jax.train_state import create_optimizer, create_train_state, init_variables


def _levels(hlo: str) -> set[str]:
  """The precision levels of the convolutions and dot products in lowered StableHLO."""
  levels = set(re.findall(r'precision = \[(\w+), \w+\]', hlo))  # dot_general
  levels |= set(re.findall(r'precision_config = \[#stablehlo<precision (\w+)>', hlo))  # conv
  return levels


@pytest.fixture(scope='module')
def digits():
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  return ds, model, init_variables(model, jax.random.PRNGKey(0), ds.image_shape)


def test_defaults_score_at_highest_and_train_and_evaluate_at_the_platform_default():
  config = make_tiny_config()
  assert config.precision.to_dict() == precision.DEFAULTS == {
      'train': 'default', 'evaluate': 'default', 'score': 'highest'}


def test_unknown_level_is_one_config_error_naming_the_field():
  config = make_tiny_config()
  config.precision.score = 'tf32'
  with pytest.raises(ConfigError, match=r"precision.score 'tf32'.*--config.precision.score"):
    driver.validate_config(config)


def test_traced_at_wins_over_the_callers_precision():
  matmul = lambda a, b: a @ b
  x = jnp.ones((4, 4))
  with jax.default_matmul_precision('highest'):
    assert _levels(jax.jit(matmul).lower(x, x).as_text()) == {'HIGHEST'}
    pinned = jax.jit(precision.traced_at('default', matmul))
    assert _levels(pinned.lower(x, x).as_text()) == {'DEFAULT'}
  assert _levels(jax.jit(precision.traced_at('high', matmul)).lower(x, x).as_text()) == {'HIGH'}
  assert precision.traced_at(None, matmul) is matmul


@pytest.mark.parametrize('score,evaluate', [('highest', 'default'), ('default', 'high')])
def test_lowered_scorer_carries_the_requested_precision(digits, score, evaluate):
  ds, model, variables = digits
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=32,
                          score_precision=score, evaluate_precision=evaluate)
  images = ds.train_images
  # pylint: disable=protected-access
  cod = scorer._cod.lower((variables, variables), images).as_text()
  assert 'convolution' in cod and 'dot_general' in cod
  assert _levels(cod) == {score.upper()}
  measure = scorer._uncertainty(lambda p: p.max(-1))
  assert _levels(measure.lower(variables, images).as_text()) == {score.upper()}
  for mapper in (scorer._features, scorer._gradient_embedding_factors):
    assert _levels(mapper.lower(variables, images).as_text()) == {score.upper()}
  evaluation = scorer._logits_in(32, scorer.evaluate_precision).lower(variables, images)
  assert _levels(evaluation.as_text()) == {evaluate.upper()}


@pytest.mark.parametrize('level', ['default', 'highest'])
def test_lowered_train_step_carries_config_precision_train(digits, level):
  ds, model, variables = digits
  config = make_tiny_config()
  config.precision.train, config.tod_loss_form = level, 'paper'
  step = train.make_train_step(config, ds)
  state = create_train_state(model, variables, create_optimizer(config))
  labeled = {'image': ds.train_images[:32], 'label': ds.train_labels[:32]}
  unlabeled = {'image': ds.train_images[32:48]}
  with jax.default_matmul_precision('high'):  # The caller's level does not leak in.
    hlo = step.jitted.lower(state, labeled, unlabeled, jax.random.PRNGKey(0), False).as_text()
  assert _levels(hlo) == {level.upper()}


def test_every_level_computes_the_same_on_the_cpu(digits):
  """The CPU computes float32 at every level: the policy changes no CPU result."""
  ds, model, variables = digits
  other = init_variables(model, jax.random.PRNGKey(1), ds.image_shape)
  cpu = make_mesh(jax.devices('cpu')[:1])
  scores = [scoring.Scorer(model, ds.mean, ds.std, 'softmax', 64, cpu, score_precision=level).cod(
      variables, other, ds.train_images, np.arange(200)) for level in precision.LEVELS]
  for s in scores[1:]:
    np.testing.assert_array_equal(s, scores[0])


@pytest.mark.parametrize('name,platform,expected', [
    ('auto', 'gpu', 'bfloat16'), ('auto', 'tpu', 'bfloat16'), ('auto', 'cpu', 'float32'),
    ('float32', 'gpu', 'float32'), ('bfloat16', 'cpu', 'bfloat16')])
def test_auto_compute_dtype_is_bfloat16_on_gpu_and_tpu_only(name, platform, expected):
  assert precision.train_dtype(name, platform) == expected


def test_auto_is_the_default_and_an_unknown_dtype_is_one_config_error():
  config = make_tiny_config()
  assert config.compute_dtype == 'auto'
  config.compute_dtype = 'float16'
  with pytest.raises(ConfigError, match=r"compute_dtype 'float16'.*--config.compute_dtype"):
    driver.validate_config(config)


def test_bfloat16_training_keeps_a_float32_scorer():
  """compute_dtype='bfloat16': the train step's model computes in bfloat16, while the query
  scores and test metrics come from a float32 model (no bf16 value in the scorer's HLO)."""
  from tod_jax import cycle  # pylint: disable=import-outside-toplevel
  config = make_tiny_config()
  config.compute_dtype = 'bfloat16'
  ds = datasets.load_digits()
  experiment = cycle.setup(config, ds)
  assert experiment.model.dtype == jnp.bfloat16
  images = ds.train_images[:8]
  hlo = experiment.scorer._logits.lower(experiment.init_variables, images).as_text()  # pylint: disable=protected-access
  assert 'bf16' not in hlo
  assert 'bf16' in jax.jit(lambda v, x: experiment.model.apply(v, x / 1.0, train=False)).lower(
      experiment.init_variables, images).as_text()
