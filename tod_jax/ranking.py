"""Top-b selection of pool indices by score."""

import numpy as np

from tod_jax.errors import ConfigError, UserError


class NonFiniteScoreError(UserError, FloatingPointError):
  """Scores are NaN: the model diverged."""


def top_b(scores: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
  """The `budget` candidates with the largest scores.

  Ties go to the smaller pool index, so the result is deterministic.

  Args:
    scores: [n] float, one score per candidate.
    candidates: [n] int, distinct unlabeled pool indices.
    budget: how many to return.
  Returns:
    [budget] int64 pool indices, highest score first.
  """
  scores, candidates = np.asarray(scores), np.asarray(candidates)
  if scores.shape != candidates.shape or scores.ndim != 1:
    raise ValueError(f'scores {scores.shape} and candidates {candidates.shape} must be two '
                     'vectors of the same length.')
  if not 0 <= budget <= len(candidates):
    raise ConfigError(f'Cannot select {budget} of {len(candidates)} candidates; lower '
                     '--config.budget_fraction or --config.num_cycles, or raise pool_subset.')
  if np.isnan(scores).any():
    raise NonFiniteScoreError(f'{int(np.isnan(scores).sum())} scores are NaN: the model '
                             'diverged; lower --config.learning_rate.')
  order = np.lexsort((candidates, -scores))  # Last key first: score desc, then index asc.
  return candidates[order[:budget]].astype(np.int64)
