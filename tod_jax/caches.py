"""The process-wide caches of compiled functions and shared objects, in one place.

The train step, the scorers, the models and the jitted initialisers are built once
per setting and shared by every run of a process, so a comparison's seeds and
strategies compile once. `memoize` makes such a cache; `scoped()` runs code (a test
that swaps a function the step traces) with empty caches and puts the old ones back
afterwards.
"""

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar('F', bound=Callable[..., Any])
_STORES: list[dict] = []  # One dict per memoized function.


def memoize(fn: F) -> F:
  """`fn` computed once per distinct (hashable) arguments, kept for the process."""
  store: dict = {}
  _STORES.append(store)

  @functools.wraps(fn)
  def cached(*args, **kwargs):
    key = (args, tuple(sorted(kwargs.items())))
    if key not in store:
      store[key] = fn(*args, **kwargs)
    return store[key]
  return cached  # type: ignore[return-value]


@contextlib.contextmanager
def scoped() -> Iterator[None]:
  """Every cache empty inside, as it was before outside."""
  saved = [dict(store) for store in _STORES]
  for store in _STORES:
    store.clear()
  try:
    yield
  finally:
    for store, contents in zip(_STORES, saved):
      store.clear()
      store.update(contents)
