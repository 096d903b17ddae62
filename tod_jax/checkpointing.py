"""Orbax checkpoints of a run: one per completed cycle, written atomically.

A checkpoint for cycle c holds the model trained in cycle c (params, BatchNorm
statistics, EMA model, step) — which is also the baseline w_c that COD and the
cyclic loss need in cycle c+1 — and, as JSON, the labeled set for cycle c+1,
the cycle number, the next cycle's PRNG key and every metrics record so far.
Orbax writes into a temporary directory and renames it when complete, so an
interrupted save never replaces the last good checkpoint.
"""

import os
from typing import Any, Optional

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp

from tod_jax.errors import UserError


class CheckpointError(UserError, RuntimeError):
  """A checkpoint cannot be read or does not fit this run."""


class Checkpointer:
  """Saves and restores `(model_tree, meta)` per cycle under `workdir/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: Optional[int] = None):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    # Nothing is created until the first save: reading a run writes nothing.
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=False))

  def latest_cycle(self) -> Optional[int]:
    return self._manager.latest_step()

  def cycles(self) -> list[int]:
    """Every saved cycle, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, cycle: int, model_tree: chex.ArrayTree, meta: dict,
           strategy_state: Optional[dict] = None) -> None:
    """Saves and waits until the checkpoint is complete on disk.

    `strategy_state` is a strategy's own pytree of arrays (e.g. kept COD outputs).
    """
    items = {'model': ocp.args.StandardSave(model_tree), 'meta': ocp.args.JsonSave(meta)}
    if strategy_state:
      items['strategy_state'] = ocp.args.StandardSave(strategy_state)
    self._manager.save(cycle, args=ocp.args.Composite(**items))
    self._manager.wait_until_finished()

  def restore(self, cycle: int, abstract_model_tree: Any) -> tuple[Any, dict, dict]:
    """Restores cycle `cycle`: (model tree shaped like `abstract_model_tree`, meta,
    strategy state as NumPy arrays or {} if the checkpoint has none)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_model_tree)
    items = {'model': ocp.args.StandardRestore(abstract), 'meta': ocp.args.JsonRestore()}
    if os.path.isdir(os.path.join(self.directory, str(cycle), 'strategy_state')):
      items['strategy_state'] = ocp.args.StandardRestore()
    restored = self._restore(cycle, items)
    strategy_state = (jax.tree.map(np.asarray, dict(restored['strategy_state']))
                      if 'strategy_state' in items else {})
    return restored['model'], restored['meta'], strategy_state

  def restore_meta(self, cycle: int) -> dict:
    """The JSON metadata of cycle `cycle` alone (labeled set, queries, records)."""
    return self._restore(cycle, {'meta': ocp.args.JsonRestore()})['meta']

  def _restore(self, cycle: int, items: dict) -> Any:
    try:
      return self._manager.restore(cycle, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax raises many types for missing or corrupt files.
      raise CheckpointError(
          f'Cannot restore checkpoint {os.path.join(self.directory, str(cycle))} '
          f'({type(e).__name__}: {e}). If it is damaged, move that directory away to resume '
          'from the cycle before, or start a new run with another --workdir.') from e

  def close(self) -> None:
    self._manager.close()


def has_checkpoints(workdir: str) -> bool:
  """Whether `workdir/checkpoints` holds a complete checkpoint (reads only)."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return False
  checkpointer = Checkpointer(workdir)
  try:
    return checkpointer.latest_cycle() is not None
  finally:
    checkpointer.close()
