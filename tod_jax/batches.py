"""Batches of pool indices, and how they reach the devices.

`draw` is the one batch planner: training's labeled and unlabeled batches, the blocks
of a pool split over hosts and VAAL's batches all come from it, each batch of a fixed
size, so the step that consumes it compiles once. The pool then reaches the devices
whole (kept there, each step gets indices) or batch by batch, two ahead of the step.
"""

import collections
import functools
import itertools
from typing import Any, Iterable, Iterator, Optional, Sequence

import jax
import ml_collections
import numpy as np

from tod_jax import host_pool, sharded_map
from tod_jax.dataset import Dataset
from tod_jax.errors import ConfigError

# How `draw` picks: 'cycle' one shuffle, repeated from its start when more are needed (an
# epoch); 'passes' a new shuffle for every pass; 'random' at random, with replacement only
# when the indices are fewer than needed; 'replace' at random with replacement.
HOW = ('cycle', 'passes', 'random', 'replace')
DATA_ON_DEVICE = ('auto', 'always', 'never')


def steps_per_epoch(num_labeled: int, batch_size: int) -> int:
  """Steps of one pass over the labeled set; the last batch is topped up (epoch)."""
  return max(1, -(-num_labeled // batch_size))


def draw(rng: np.random.Generator, indices: np.ndarray, count: int, how: str) -> np.ndarray:
  """`count` of `indices`, picked as `how` says (HOW); the same `rng` state gives the same."""
  if how == 'cycle':
    return np.resize(rng.permutation(indices), count)
  if how == 'passes':
    passes = [rng.permutation(indices) for _ in range(-(-count // len(indices)))]
    return np.concatenate(passes)[:count]
  if how not in HOW:
    raise ValueError(f'Unknown way to draw {how!r}; use one of {HOW}.')
  return rng.choice(indices, count, replace=how == 'replace' or len(indices) < count)


def batched(rng: np.random.Generator, indices: np.ndarray, num_batches: int, batch_size: int,
            how: str) -> np.ndarray:
  """[num_batches, batch_size] pool indices, drawn with `draw`."""
  return draw(rng, indices, num_batches * batch_size, how).reshape(num_batches, batch_size)


def by_block(rng: np.random.Generator, indices: np.ndarray, bounds: np.ndarray,
             rows: Sequence[np.ndarray], num_batches: int, batch_size: int, how: str,
             what: str = 'labeled') -> np.ndarray:
  """[num_batches, batch_size] pool indices whose rows rows[p] hold samples of block p
  (host_pool: a pool split over processes), drawn per block with `draw`. Every process
  computes the same plan from the same `rng`."""
  out = np.zeros((num_batches, batch_size), np.int64)
  for p, positions in enumerate(host_pool.split_by_owner(indices, bounds)):
    mine = np.asarray(indices)[positions]
    if not len(mine):
      raise ConfigError(f'Process {p} holds none of the {what} samples (config.distributed.host_pool); '
                        'set --config.distributed.host_pool=False for this run.')
    out[:, rows[p]] = draw(rng, mine, num_batches * len(rows[p]), how).reshape(
        num_batches, len(rows[p]))
  return out


def epoch(rng: np.random.Generator, labeled: np.ndarray, unlabeled: np.ndarray,
          config: ml_collections.ConfigDict, images: Any, sharding: jax.sharding.Sharding
          ) -> tuple[np.ndarray, list]:
  """One epoch's batches as int32 pool indices: (labeled [steps, batch], per step the
  unlabeled batch, or None without the TOD loss).

  The labeled set is shuffled and the last batch topped up from the start of the
  shuffle, so every batch has config.batch_size samples; each step also draws
  config.unlabeled_batch_size unlabeled samples. A pool split over hosts (`images` a
  host_pool.HostShard) draws the rows of every batch that sit on process p's devices
  from process p's block (with replacement, for the unlabeled batches).
  """
  n_steps = steps_per_epoch(len(labeled), config.batch_size)
  sizes = [(labeled, config.batch_size, 'cycle', 'labeled')]
  if config.semi:
    sizes.append((unlabeled, config.unlabeled_batch_size, 'random', 'unlabeled'))
  plans = []
  for indices, size, how, what in sizes:
    if host_pool.is_sharded(images):
      rows = host_pool.process_rows(sharding, size)
      how = 'replace' if what == 'unlabeled' else how
      plans.append(by_block(rng, indices, images.bounds, rows, n_steps, size, how, what))
    else:
      plans.append(batched(rng, indices, n_steps, size, how))
  order = plans[0].astype(np.int32)
  return order, list(plans[1].astype(np.int32)) if config.semi else [None] * n_steps


def dispatches(num_steps: int, per_dispatch: int, done: int = 0,
               stop_at: Iterable[int] = ()) -> list[tuple[int, int]]:
  """An epoch's steps [0, num_steps) as dispatches (start, stop) of exactly `per_dispatch`
  steps or of one step, so a scanned block compiles once whatever the epoch's length.

  `done` steps precede the epoch; a dispatch ends where done + stop is in `stop_at` (a
  state someone must see, e.g. a snapshot's step). The rest is single steps.
  """
  stops, out, start = set(stop_at), [], 0
  while start < num_steps:
    block = start + per_dispatch
    if per_dispatch > 1 and block <= num_steps and not any(
        done + s in stops for s in range(start + 1, block)):
      out.append((start, block))
      start = block
    else:
      out.append((start, start + 1))
      start += 1
  return out


def check_data_on_device(value: str) -> None:
  if value not in DATA_ON_DEVICE:
    raise ConfigError(f'data_on_device {value!r} is not one of {DATA_ON_DEVICE}; set '
                      '--config.data_on_device to one of them.')


def keeps_data_on_device(config: ml_collections.ConfigDict, dataset: Dataset) -> bool:
  """Whether training keeps the pool (uint8 images and labels) on every device.

  config.data_on_device: 'always', 'never', or 'auto' (when the pool's bytes are at
  most config.device_data_max_bytes; each device holds a whole copy).
  """
  check_data_on_device(config.data_on_device)
  if host_pool.is_sharded(dataset.train_images):  # No process holds the whole pool.
    if config.data_on_device == 'always':
      raise ConfigError("data_on_device='always' needs the whole pool on every process; "
                        'with config.distributed.host_pool set --config.data_on_device=auto.')
    return False
  if config.data_on_device == 'auto':
    size = dataset.train_images.nbytes + dataset.train_labels.nbytes
    return size <= config.device_data_max_bytes
  return config.data_on_device == 'always'


def prefetch_to_device(batches: Iterable[Any], sharding: jax.sharding.Sharding,
                       size: int = 2) -> Iterator[Any]:
  """Yields each host batch (a pytree) as device arrays laid out by `sharding`,
  transferring `size` batches ahead, so the copy overlaps the running step."""
  queue, batches = collections.deque(), iter(batches)

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(sharded_map.put(batch, sharding))  # Asynchronous transfer.

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def device_batches(dataset: Dataset, pool: Optional[dict], order: np.ndarray, unlabeled: list,
                   sharding: jax.sharding.Sharding) -> Iterator[tuple]:
  """A train step's batch arguments: indices into the device-resident `pool`, or streamed
  images (of a pool split over hosts, each process reads the rows on its own devices)."""
  if pool is not None:
    return ((pool, *indices) for indices in prefetch_to_device(zip(order, unlabeled), sharding))
  images, read = dataset.train_images, lambda idx: dataset.train_images[idx]
  if host_pool.is_sharded(images):
    mine = functools.lru_cache(
        lambda n: host_pool.process_rows(sharding, n)[jax.process_index()])
    read = lambda idx: images.take(idx, mine(len(idx)))
  return prefetch_to_device(
      (({'image': read(o), 'label': dataset.train_labels[o]},
        {} if u is None else {'image': read(u)}) for o, u in zip(order, unlabeled)), sharding)
