"""COD with one forward pass per pool image per cycle, by keeping the last outputs.

Cycle c's query already ran w_c over the unlabeled pool. Keeping those outputs
(per pool index, in a run-state dict that the driver checkpoints) means cycle
c+1 only runs w_{c+1} and compares with the kept f(x; w_c) (Eq. 5). Indices
without kept outputs (cycle 1, pool subsampling, an old checkpoint) are scored
with the stored previous parameters, so the scores never depend on what
happens to be cached. When the kept outputs would exceed `max_bytes` (dense
segmentation outputs), scoring falls back to two passes.
"""

import math
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np
from absl import logging

from tod_jax.scoring import Scorer

KEPT = 'kept_outputs'  # Key in the run's strategy state.


def kept_nbytes(pool_size: int, output_shape: tuple[int, ...], dtype: str) -> int:
  """Bytes needed to keep one output of `output_shape` per pool index."""
  return pool_size * math.prod(output_shape) * jnp.dtype(dtype).itemsize


def cod_scores(scorer: Scorer, variables: chex.ArrayTree, baseline_variables: chex.ArrayTree,
               images: np.ndarray, candidates: np.ndarray, state: dict[str, Any], *,
               dtype: str = 'float32', max_bytes: int = 2**30) -> np.ndarray:
  """Eq. 5 for `candidates`, running only `variables` where kept outputs exist.

  Args:
    scorer: the run's Scorer.
    variables: w_c, the model just trained.
    baseline_variables: w_{c-1}, used for candidates without kept outputs.
    images: the pool's images, indexed by `candidates`.
    candidates: [n] pool indices to score.
    state: the run's strategy state; `state[KEPT]` = {'outputs': [N, ...], 'valid': bool [N]}
      is read and replaced by this cycle's outputs (valid for `candidates` only, since
      every other kept output now belongs to an older model).
    dtype: storage dtype of kept outputs ('float32' or 'bfloat16').
    max_bytes: above this the outputs are not kept and both models run.
  Returns:
    [n] float32 scores.
  """
  candidates = np.asarray(candidates)
  if len(candidates) == 0:
    return np.zeros((0,), np.float32)
  needed = kept_nbytes(len(images), scorer.output_shape(variables, images), dtype)
  if needed > max_bytes:
    logging.log_first_n(logging.WARNING, 'Kept COD outputs would need %d bytes (limit %d, '
                        'config.kept_outputs_max_bytes): scoring with two forward passes.', 1,
                        needed, max_bytes)
    state.pop(KEPT, None)
    return scorer.cod(variables, baseline_variables, images, candidates)

  current = scorer.outputs(variables, images, candidates)
  kept = state.get(KEPT)
  have = (np.zeros(len(candidates), bool) if kept is None
          else np.asarray(kept['valid'])[candidates])
  baseline = np.empty_like(current)
  if have.any():
    baseline[have] = np.asarray(kept['outputs'])[candidates[have]].astype(np.float32)
  if not have.all():
    baseline[~have] = scorer.outputs(baseline_variables, images, candidates[~have])
  scores = scorer.discrepancy(current, baseline)

  outputs = (np.asarray(kept['outputs']) if kept is not None
             and kept['outputs'].dtype == jnp.dtype(dtype)
             and kept['outputs'].shape[1:] == current.shape[1:]
             else np.zeros((len(images), *current.shape[1:]), jnp.dtype(dtype)))
  outputs = np.array(outputs)  # A writable copy; the old array may be a checkpoint view.
  outputs[candidates] = current.astype(outputs.dtype)
  valid = np.zeros(len(images), bool)
  valid[candidates] = True
  state[KEPT] = {'outputs': outputs, 'valid': valid}
  return scores
