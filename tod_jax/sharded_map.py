"""Apply a jitted per-sample function over a whole pool, sharded over devices.

The pool is cut into fixed-size chunks (the last one zero-padded, its padding
dropped from the result), so the function compiles once; each chunk's batch
axis is split over the mesh's 'data' axis and the function's other arguments
(model variables) are replicated. The same code runs on one CPU, on fake CPU
devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`) and on GPU/TPU.

Multi-host (`jax.distributed.initialize`): the mesh spans every process's devices;
every process holds the same host data (the whole pool, the same indices), so
`put` builds each global array from each process's addressable slices and
`to_host` gathers outputs back, giving every process the same scores.
"""

import math
from typing import Any, Callable, Optional, Sequence

import chex
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tod_jax import host_pool, precision

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
  devices = list(devices) if devices is not None else jax.devices()
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host values, identical on every process, as global arrays laid out by `sharding`.

  One process: `jax.device_put`. Several: each process fills its own devices'
  slices (jax.make_array_from_callback), so nothing crosses hosts.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x  # Already a global array laid out so.
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
  """Global arrays as NumPy arrays holding the full value, the same on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def replicated_to_host(tree: Any) -> Any:
  """NumPy copies of (replicated) arrays, on every process; NumPy leaves pass through.

  A checkpoint holds host arrays only, so Orbax writes the same tree from one process
  or many (a global array replicated over several hosts is read from a local copy).
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError('replicated_to_host needs replicated arrays; gather sharded ones '
                         'with to_host.')
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(one, tree)


class PoolMapper:
  """`mapper(args, images, indices)` = `fn(args, images[indices])` computed chunk by chunk.

  `fn(args, images_chunk) -> [chunk, ...]` (or a pytree of such) must be pure and
  per-sample (row i of the output depends on row i of the input only). `level`: the
  precision of its matmuls and convolutions (tod_jax.precision; None: the caller's).
  """

  def __init__(self, fn: Callable[[Any, chex.Array], Any], chunk_size: int,
               mesh: Optional[Mesh] = None, level: Optional[str] = None):
    self.mesh = mesh if mesh is not None else make_mesh()
    n = self.mesh.size
    self.chunk_size = max(1, math.ceil(chunk_size / n)) * n  # Divisible by the device count.
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharded = NamedSharding(self.mesh, P(DATA_AXIS))
    self._fn = jax.jit(precision.traced_at(level, fn),
                       in_shardings=(self.replicated, self.data_sharded),
                       out_shardings=self.data_sharded)

  def _chunk_struct(self, images: Any) -> Any:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((self.chunk_size, *a.shape[1:]), a.dtype), images)

  def output_struct(self, args: Any, images: Any) -> Any:
    """Shapes and dtypes of one chunk's outputs (leading axis chunk_size), computed abstractly."""
    return jax.eval_shape(self._fn, args, self._chunk_struct(images))

  def lower(self, args: Any, images: Any) -> jax.stages.Lowered:
    """The jitted function lowered for one chunk of `images` (its HLO, its cost analysis)."""
    return self._fn.lower(args, self._chunk_struct(images))

  def __call__(self, args: Any, images: Any, indices: Optional[np.ndarray] = None) -> Any:
    """Returns fn's outputs as NumPy arrays with leading axis len(indices).

    `images` is an array or a pytree of arrays sharing the leading axis (e.g.
    images and their masks); fn receives the same structure, chunked.
    """
    pool_size = len(jax.tree.leaves(images)[0])
    indices = np.arange(pool_size) if indices is None else np.asarray(indices)
    args = put(args, self.replicated)
    sharded = [a for a in jax.tree.leaves(images) if host_pool.is_sharded(a)]
    if sharded:
      return self._by_host(args, images, indices, sharded[0].bounds)
    outputs = []
    for start in range(0, len(indices), self.chunk_size):
      rows = indices[start:start + self.chunk_size]
      chunk = jax.tree.map(lambda a, rows=rows: self._pad(a[rows]), images)
      # Dispatch is asynchronous: the next chunk is gathered while this one computes.
      outputs.append((self._fn(args, put(chunk, self.data_sharded)), len(rows)))
    if not outputs:
      return jax.tree.map(lambda s: np.zeros((0, *s.shape[1:]), s.dtype),
                          self.output_struct(args, images))
    return jax.tree.map(lambda *chunks: np.concatenate(chunks),
                        *[jax.tree.map(lambda a, v=v: a[:v], to_host(out))
                          for out, v in outputs])

  def _by_host(self, args: Any, images: Any, indices: np.ndarray, bounds: np.ndarray) -> Any:
    """__call__ for a pool split over hosts: chunk k's rows on process p's devices hold the
    k-th slice of process p's own indices (zeros past their end); outputs are put back
    in the order of `indices` on every process."""
    rows = host_pool.process_rows(self.data_sharded, self.chunk_size)
    mine = rows[jax.process_index()]
    positions = host_pool.split_by_owner(indices, bounds)  # Per process, into `indices`.
    per = len(mine)
    n_chunks = max(math.ceil(len(p) / per) for p in positions)
    struct = self.output_struct(args, images)
    result = jax.tree.map(lambda s: np.zeros((len(indices), *s.shape[1:]), s.dtype), struct)
    for k in range(n_chunks):
      chunk_indices = np.zeros(self.chunk_size, np.int64)
      placed = []  # (rows of the chunk, positions into `indices`) per process.
      for p, pos in enumerate(positions):
        part = pos[k * per:(k + 1) * per]
        chunk_indices[rows[p][:len(part)]] = indices[part]
        placed.append((rows[p][:len(part)], part))
      own = placed[jax.process_index()][0]
      chunk = jax.tree.map(
          lambda a: (a.take(chunk_indices, own) if host_pool.is_sharded(a)
                     else np.asarray(a)[chunk_indices]), images)
      out = to_host(self._fn(args, put(chunk, self.data_sharded)))
      for chunk_rows, part in placed:
        for r, o in zip(jax.tree.leaves(result), jax.tree.leaves(out)):
          r[part] = o[chunk_rows]
    return result

  def _pad(self, chunk: np.ndarray) -> np.ndarray:
    """Zero rows appended up to the chunk size (their outputs are dropped)."""
    if len(chunk) == self.chunk_size:
      return chunk
    pad = np.zeros((self.chunk_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    return np.concatenate([chunk, pad])
