"""Shipped protocol defaults, for any config file: `from tod_jax.configs import default`.

`check_fields` refuses a config field tod_jax does not read (a typo would be ignored
silently), for the command lines and for `tod_jax.run` alike.
"""

import difflib
from typing import Iterable

from tod_jax.configs import default
from tod_jax.errors import ConfigError

# Fields that only a dataset reads, beyond default.py's (configs/image_folder.py sets them).
DATASET_FIELDS = ('image_size', 'image_channels')


def known_fields() -> frozenset[str]:
  """Every config field tod_jax reads (fields of a group as 'group.field')."""
  return frozenset(_paths(default.get_config())) | frozenset(DATASET_FIELDS)


def _paths(config, prefix: str = '') -> list[str]:
  """'field' for each field of `config`, 'group.field' inside its groups (and 'group')."""
  out = []
  for name, value in config.items():
    out.append(prefix + name)
    if hasattr(value, 'items'):
      out += _paths(value, f'{prefix}{name}.')
  return out


def unknown_fields_message(names: Iterable[str]) -> str:
  """The one-line error for config fields that tod_jax does not read, each with a did-you-mean."""
  known = sorted(known_fields())
  parts = []
  for name in sorted(names):
    close = difflib.get_close_matches(name, known, n=1)
    parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
  return (f'Unknown config field{"s" if len(parts) > 1 else ""} {", ".join(parts)}; tod_jax '
          'reads only the fields of tod_jax/configs/default.py and, for image_folder, '
          f'{" and ".join(DATASET_FIELDS)}.')


def check_fields(config) -> None:
  """Raises ConfigError naming every field of `config` (or of its groups) that tod_jax does
  not read."""
  known = known_fields()
  unknown = [p for p in _paths(config) if p not in known
             and p.rsplit('.', 1)[0] in known | {p}]  # Not inside an unknown group.
  if unknown:
    raise ConfigError(unknown_fields_message(unknown))
