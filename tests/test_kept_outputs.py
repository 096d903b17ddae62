"""COD from kept outputs (one pass per image per cycle) equals two-pass COD."""

import jax
import numpy as np
import pytest

from conftest import make_tiny_config
from tod_jax import checkpointing, datasets, driver, kept_outputs, models, ranking, rundir
from tod_jax import cycle as cycle_lib
from tod_jax import scoring
from tod_jax.train_state import init_variables

# Kept against recomputed outputs (docs/scale.md, "Precision and determinism"): float32 scores of
# two compiled functions, which may sum in another order, agree within this on every platform.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope='module')
def setup():
  ds = datasets.load_digits()
  model = models.create_model('small_cnn', 10)
  weights = [init_variables(model, jax.random.PRNGKey(i), ds.image_shape) for i in range(4)]
  scorer = scoring.Scorer(model, ds.mean, ds.std, 'softmax', chunk_size=64)
  return ds, scorer, weights


class CountingScorer:
  """Forwards to a Scorer and counts forward passes per image."""

  def __init__(self, scorer):
    self.scorer, self.passes = scorer, 0

  def output_shape(self, variables, images):
    return self.scorer.output_shape(variables, images)

  def discrepancy(self, outputs, baseline_outputs):
    return self.scorer.discrepancy(outputs, baseline_outputs)

  def outputs(self, variables, images, indices):
    self.passes += len(indices)
    return self.scorer.outputs(variables, images, indices)

  def cod(self, variables, baseline, images, indices):
    self.passes += 2 * len(indices)
    return self.scorer.cod(variables, baseline, images, indices)


def test_kept_scores_equal_two_pass_scores_over_cycles(setup):
  ds, scorer, (w0, w1, w2, w3) = setup
  rng = np.random.default_rng(0)
  candidates = np.sort(rng.choice(ds.pool_size, 600, replace=False))
  kept, counting = None, CountingScorer(scorer)
  bogus = w3  # Not w_{c-1}: if kept outputs are used, the result cannot depend on it.
  for cycle, (current, previous) in enumerate([(w1, w0), (w2, w1), (w3, w2)], start=1):
    counting.passes = 0
    before = kept
    scores, kept = kept_outputs.cod_scores(counting, current, previous if cycle == 1 else bogus,
                                           ds.train_images, candidates, kept)
    two_pass = scorer.cod(current, previous, ds.train_images, candidates)
    np.testing.assert_allclose(scores, two_pass, rtol=1e-5, atol=1e-6)
    # Cycle 1 runs both models; later cycles one pass.
    assert counting.passes == (2 if cycle == 1 else 1) * len(candidates)
    assert kept['valid'].sum() == len(candidates)
    assert before is None or before['valid'].sum() > len(candidates)  # Returned, not mutated.
    assert before is not kept
    candidates = candidates[50:]  # The queried ones leave the pool.


def test_indices_without_kept_outputs_use_the_previous_params(setup):
  ds, scorer, (w0, w1, w2, _) = setup
  _, kept = kept_outputs.cod_scores(scorer, w1, w0, ds.train_images, np.arange(0, 300), None)
  # Pool subsampling: half of the next candidates were not scored last cycle.
  candidates = np.arange(150, 450)
  scores, kept = kept_outputs.cod_scores(scorer, w2, w1, ds.train_images, candidates, kept)
  np.testing.assert_allclose(scores, scorer.cod(w2, w1, ds.train_images, candidates),
                             rtol=1e-5, atol=1e-6)
  valid = kept['valid']
  np.testing.assert_array_equal(np.flatnonzero(valid), candidates)


def test_memory_limit_falls_back_to_two_passes(setup):
  ds, scorer, (w0, w1, _, _) = setup
  counting = CountingScorer(scorer)
  candidates = np.arange(100)
  scores, kept = kept_outputs.cod_scores(counting, w1, w0, ds.train_images, candidates, 'stale',
                                         max_bytes=1000)  # 1,437 x 10 floats: 57,480 bytes.
  np.testing.assert_array_equal(scores, scorer.cod(w1, w0, ds.train_images, candidates))
  assert kept is None
  assert counting.passes == 2 * len(candidates)


def test_bfloat16_storage_is_close(setup):
  ds, scorer, (w0, w1, w2, _) = setup
  candidates = np.arange(200)
  _, kept = kept_outputs.cod_scores(scorer, w1, w0, ds.train_images, candidates, None,
                                    dtype='bfloat16')
  assert kept['outputs'].dtype == np.dtype('bfloat16')
  scores, _ = kept_outputs.cod_scores(scorer, w2, w1, ds.train_images, candidates, kept,
                                      dtype='bfloat16')
  np.testing.assert_allclose(scores, scorer.cod(w2, w1, ds.train_images, candidates), atol=1e-2)


def test_kept_nbytes():
  assert kept_outputs.kept_nbytes(1000, (10,), 'float32') == 40_000
  assert kept_outputs.kept_nbytes(10, (4, 4, 19), 'bfloat16') == 10 * 16 * 19 * 2


def test_a_runs_kept_query_is_the_two_pass_query_away_from_near_ties(tmp_path):
  """Cycle 2 of a run scores with w_1's outputs kept in cycle 1's checkpoint. Kept and
  recomputed outputs come from different compiled functions, which a GPU may round
  differently: what is promised is the same scores within (RTOL, ATOL) and so the same query
  except where a candidate's score is that close to the b-th largest."""
  config = make_tiny_config()  # 2 cycles, kept_outputs.enabled.
  workdir = str(tmp_path)
  driver.run(config, workdir)
  dataset = datasets.load_digits()
  experiment = cycle_lib.setup(config, dataset)
  checkpointer = checkpointing.Checkpointer(workdir)
  after_1, _, _ = rundir.restore(checkpointer, 1, experiment)
  after_2, meta, _ = rundir.restore(checkpointer, 2, experiment)
  checkpointer.close()
  kept = after_1.strategy_state[kept_outputs.KEPT]  # The outputs travel with the checkpoint.
  candidates = np.setdiff1d(np.arange(dataset.pool_size), after_1.labeled)
  two_pass = experiment.scorer.cod(after_2.variables, after_1.variables, dataset.train_images,
                                   candidates)
  kept_scores, _ = kept_outputs.cod_scores(experiment.scorer, after_2.variables, None,
                                           dataset.train_images, candidates, kept)
  np.testing.assert_allclose(kept_scores, two_pass, rtol=RTOL, atol=ATOL)
  queried = np.asarray(meta['queried'])
  np.testing.assert_allclose(meta['query_scores'],
                             two_pass[np.searchsorted(candidates, queried)], rtol=RTOL, atol=ATOL)
  budget = experiment.budget
  boundary = np.sort(two_pass)[-budget]
  near = candidates[np.abs(two_pass - boundary) <= 2 * (ATOL + RTOL * abs(boundary))]
  differ = set(queried) ^ set(ranking.top_b(two_pass, candidates, budget))
  assert differ <= set(near), (sorted(differ), sorted(near))
