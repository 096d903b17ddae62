"""COD with one forward pass per pool image per cycle, by keeping the last outputs.

Cycle c's query already ran w_c over the unlabeled pool. Keeping those outputs
(per pool index, in the strategy state that the run checkpoints) means cycle
c+1 only runs w_{c+1} and compares with the kept f(x; w_c) (Eq. 5). Indices
without kept outputs (cycle 1, pool subsampling, an old checkpoint) are scored
with the stored previous parameters, so the scores never depend on what
happens to be cached. When the kept outputs would exceed `max_bytes` (dense
segmentation outputs), scoring falls back to two passes.
"""

import math
from typing import Optional

import chex
import jax.numpy as jnp
import numpy as np
from absl import logging

from tod_jax.scoring import Scorer

KEPT = 'kept_outputs'  # Key in the run's strategy state.


def kept_nbytes(pool_size: int, output_shape: tuple[int, ...], dtype: str) -> int:
  """Bytes needed to keep one output of `output_shape` per pool index."""
  return pool_size * math.prod(output_shape) * jnp.dtype(dtype).itemsize


def cod_scores(scorer: Scorer, variables: chex.ArrayTree, previous_variables: chex.ArrayTree,
               images: np.ndarray, candidates: np.ndarray, kept: Optional[dict], *,
               dtype: str = 'float32', max_bytes: int = 2**30
               ) -> tuple[np.ndarray, Optional[dict]]:
  """Eq. 5 for `candidates`, running only `variables` where kept outputs exist.

  Args:
    scorer: the run's Scorer.
    variables: w_c, the model just trained.
    previous_variables: w_{c-1}, used for candidates without kept outputs.
    images: the pool's images, indexed by `candidates`.
    candidates: [n] pool indices to score.
    kept: the last cycle's {'outputs': [N, ...], 'valid': bool [N]}, or None.
    dtype: storage dtype of kept outputs ('float32' or 'bfloat16').
    max_bytes: above this the outputs are not kept and both models run.
  Returns:
    ([n] float32 scores, this cycle's kept outputs: valid for `candidates` only, since
    every other kept output now belongs to an older model; None above max_bytes).
  """
  candidates = np.asarray(candidates)
  if len(candidates) == 0:
    return np.zeros((0,), np.float32), kept
  needed = kept_nbytes(len(images), scorer.output_shape(variables, images), dtype)
  if needed > max_bytes:
    logging.log_first_n(logging.WARNING, 'Kept COD outputs would need %d bytes (limit %d, '
                        'config.kept_outputs.max_bytes): scoring with two forward passes.', 1,
                        needed, max_bytes)
    return scorer.cod(variables, previous_variables, images, candidates), None

  current = scorer.outputs(variables, images, candidates)
  have = (np.zeros(len(candidates), bool) if kept is None
          else np.asarray(kept['valid'])[candidates])
  previous = np.empty_like(current)
  if have.any():
    previous[have] = np.asarray(kept['outputs'])[candidates[have]].astype(np.float32)
  if not have.all():
    previous[~have] = scorer.outputs(previous_variables, images, candidates[~have])
  scores = scorer.discrepancy(current, previous)
  return scores, _kept(kept, current, candidates, len(images), jnp.dtype(dtype))


def _kept(kept: Optional[dict], current: np.ndarray, candidates: np.ndarray, pool_size: int,
          dtype: np.dtype) -> dict:
  """The new kept outputs: `current` at `candidates`, nothing valid elsewhere."""
  reusable = (kept is not None and kept['outputs'].dtype == dtype
              and kept['outputs'].shape[1:] == current.shape[1:])
  # A writable copy: the old array may be a checkpoint's read-only view.
  outputs = (np.array(kept['outputs']) if reusable
             else np.zeros((pool_size, *current.shape[1:]), dtype))
  outputs[candidates] = current.astype(dtype)
  valid = np.zeros(pool_size, bool)
  valid[candidates] = True
  return {'outputs': outputs, 'valid': valid}
