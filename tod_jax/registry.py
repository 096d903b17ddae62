"""Named registries of pluggable parts (strategies, models, datasets), as in big_vision.

A name can be registered once: a second registration is refused, so a plug-in
cannot silently replace a built-in part.
"""

import contextlib
from typing import Generic, Iterator, TypeVar

from tod_jax.errors import ConfigError

T = TypeVar('T')


class Registry(Generic[T]):
  """name -> value; `get` of an unknown name raises ConfigError naming the config field."""

  def __init__(self, kind: str, config_field: str):
    self.kind, self.config_field = kind, config_field
    self._entries: dict[str, T] = {}

  def register(self, name: str, value: T) -> T:
    if name in self._entries:
      raise ValueError(f'A {self.kind} named {name!r} is already registered; register yours '
                       'under another name.')
    self._entries[name] = value
    return value

  @contextlib.contextmanager
  def scoped(self) -> Iterator[None]:
    """Whatever is registered inside is gone outside (tests leave the registry as found)."""
    entries = dict(self._entries)
    try:
      yield
    finally:
      self._entries = entries

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise ConfigError(f'Unknown {self.kind} {name!r}; set --config.{self.config_field} to one '
                        f'of {sorted(self._entries)}.')
    return self._entries[name]

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))

  def __len__(self) -> int:
    return len(self._entries)
