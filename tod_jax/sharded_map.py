"""Apply a jitted per-sample function over a whole pool, sharded over devices.

The pool is cut into fixed-size chunks (the last one zero-padded, its padding
dropped from the result), so the function compiles once; each chunk's batch
axis is split over the mesh's 'data' axis and the function's other arguments
(model variables) are replicated. The same code runs on one CPU, on fake CPU
devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`) and on GPU/TPU.
"""

import math
from typing import Any, Callable, Optional, Sequence

import chex
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: all local devices)."""
  devices = list(devices) if devices is not None else jax.local_devices()
  return Mesh(np.asarray(devices), (DATA_AXIS,))


class PoolMapper:
  """`mapper(args, images, indices)` = `fn(args, images[indices])` computed chunk by chunk.

  `fn(args, images_chunk) -> [chunk, ...]` (or a pytree of such) must be pure and
  per-sample (row i of the output depends on row i of the input only).
  """

  def __init__(self, fn: Callable[[Any, chex.Array], Any], chunk_size: int,
               mesh: Optional[Mesh] = None):
    self.mesh = mesh if mesh is not None else make_mesh()
    n = self.mesh.size
    self.chunk_size = max(1, math.ceil(chunk_size / n)) * n  # Divisible by the device count.
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharded = NamedSharding(self.mesh, P(DATA_AXIS))
    self._fn = jax.jit(fn, in_shardings=(self.replicated, self.data_sharded),
                       out_shardings=self.data_sharded)

  def output_struct(self, args: Any, images: Any) -> Any:
    """Shapes and dtypes of one chunk's outputs (leading axis chunk_size), computed abstractly."""
    return jax.eval_shape(self._fn, args, jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((self.chunk_size, *a.shape[1:]), a.dtype), images))

  def __call__(self, args: Any, images: Any, indices: Optional[np.ndarray] = None) -> Any:
    """Returns fn's outputs as NumPy arrays with leading axis len(indices).

    `images` is an array or a pytree of arrays sharing the leading axis (e.g.
    images and their masks); fn receives the same structure, chunked.
    """
    pool_size = len(jax.tree.leaves(images)[0])
    indices = np.arange(pool_size) if indices is None else np.asarray(indices)
    args = jax.device_put(args, self.replicated)
    outputs = []
    for start in range(0, len(indices), self.chunk_size):
      rows = indices[start:start + self.chunk_size]
      chunk = jax.tree.map(lambda a, rows=rows: self._pad(a[rows]), images)
      # Dispatch is asynchronous: the next chunk is gathered while this one computes.
      outputs.append((self._fn(args, jax.device_put(chunk, self.data_sharded)), len(rows)))
    if not outputs:
      return jax.tree.map(lambda s: np.zeros((0, *s.shape[1:]), s.dtype),
                          self.output_struct(args, images))
    return jax.tree.map(lambda *chunks: np.concatenate(chunks),
                        *[jax.tree.map(lambda a, v=v: np.asarray(a)[:v], out)
                          for out, v in outputs])

  def _pad(self, chunk: np.ndarray) -> np.ndarray:
    """Zero rows appended up to the chunk size (their outputs are dropped)."""
    if len(chunk) == self.chunk_size:
      return chunk
    pad = np.zeros((self.chunk_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    return np.concatenate([chunk, pad])
