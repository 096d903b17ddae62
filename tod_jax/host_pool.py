"""Multi-host runs in which each process holds only its block of the pool (config.distributed.host_pool).

The pool's N images are split into `process_count` contiguous blocks; process p loads
block p only (`HostShard`). Labels stay whole on every process (they are small). Every
array that crosses the mesh is built as a global batch or chunk whose rows on process
p's devices hold block-p images (`process_rows`, `take`), so each process reads only
its own images and no image crosses hosts; scores and outputs come back to every process
through the all-gather that sharded_map.to_host already does.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils


class HostShard:
  """Pool images [N, ...] of which this process holds rows [lo, hi) only.

  Shape, length and dtype are the whole pool's; `take` reads owned rows.
  """

  def __init__(self, local: np.ndarray, bounds: np.ndarray, process: int):
    """`local`: block `process` of the blocks that `bounds` (block_bounds) delimits."""
    self.local, self.bounds = local, bounds
    self.lo, self.hi = int(bounds[process]), int(bounds[process + 1])
    if len(local) != self.hi - self.lo:
      raise ValueError(f'block {process} has {self.hi - self.lo} rows, got {len(local)}')
    self.shape, self.dtype = (int(bounds[-1]), *local.shape[1:]), local.dtype

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, indices):
    raise TypeError('A HostShard holds one block of the pool; read it with take(indices, '
                    'rows) (config.distributed.host_pool: this code path does not support it).')

  def take(self, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(indices), ...] images: `indices[rows]` read from this block, zeros elsewhere."""
    indices, rows = np.asarray(indices), np.asarray(rows)
    mine = indices[rows]
    if mine.size and (mine.min() < self.lo or mine.max() >= self.hi):
      raise IndexError(f'pool indices outside this process\'s block [{self.lo}, {self.hi})')
    out = np.zeros((len(indices), *self.shape[1:]), self.dtype)
    out[rows] = self.local[mine - self.lo]
    return out


def block_bounds(pool_size: int, count: int) -> np.ndarray:
  """[count + 1] starts of the `count` contiguous blocks (sizes differ by at most 1)."""
  return np.array([pool_size * p // count for p in range(count + 1)], np.int64)


def owners(indices: np.ndarray, bounds: np.ndarray) -> np.ndarray:
  """The process (block) that holds each pool index."""
  return np.searchsorted(bounds, np.asarray(indices), side='right') - 1


def process_rows(sharding: jax.sharding.Sharding, n: int) -> list[np.ndarray]:
  """For each process, the rows of an [n, ...] array that `sharding` puts on its devices."""
  rows = [[] for _ in range(jax.process_count())]
  for device, index in sharding.devices_indices_map((n,)).items():
    rows[device.process_index].extend(range(*index[0].indices(n)))
  return [np.unique(np.asarray(r, np.int64)) for r in rows]


def shard(images: np.ndarray, process: int, count: int) -> HostShard:
  """Process `process`'s block of the in-memory `images`."""
  bounds = block_bounds(len(images), count)
  return HostShard(np.ascontiguousarray(images[bounds[process]:bounds[process + 1]]), bounds,
                   process)


def is_sharded(images) -> bool:
  return isinstance(images, HostShard)


def gather_blocks(local: np.ndarray, bounds: np.ndarray) -> np.ndarray:
  """Every process's block of a small per-sample array (labels), joined in pool order."""
  width = int(np.max(np.diff(bounds)))
  padded = np.zeros((width, *local.shape[1:]), local.dtype)
  padded[:len(local)] = local
  blocks = np.asarray(multihost_utils.process_allgather(padded))  # [count, width, ...]
  return np.concatenate([b[:n] for b, n in zip(blocks, np.diff(bounds))])


def split_by_owner(indices: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
  """Positions into `indices` held by each process, in order."""
  who = owners(indices, bounds)
  return [np.nonzero(who == p)[0] for p in range(len(bounds) - 1)]
