"""Shipped protocol defaults, for any config file: `from tod_jax.configs import default`.

`check_fields` refuses a config field tod_jax does not read (a typo would be ignored
silently), for the command lines and for `tod_jax.run` alike.
"""

import difflib
from typing import Any, Iterable, Mapping

from tod_jax.configs import default
from tod_jax.errors import ConfigError

# Fields that only a dataset reads, beyond default.py's (configs/image_folder.py sets them).
DATASET_FIELDS = ('image_size', 'image_channels')
_VAAL = ('latent_size', 'width', 'discriminator_width', 'beta', 'adversary_weight',
         'learning_rate', 'batch_size', 'vae_steps', 'discriminator_steps', 'iteration_fraction')
# Fields renamed or moved into a group since: old name -> today's path. Old names are refused
# with the new one; saved runs (config.json) read under the new names.
RENAMED_FIELDS = {
    'extra_baselines': 'snapshot_intervals', 'loss_baseline': 'loss_teacher',
    **{f'vaal_{name}': f'vaal.{name}' for name in _VAAL},
    **{f'll4al_{name}': f'll4al.{name}' for name in ('weight', 'margin', 'detach_at')},
    'keep_outputs': 'kept_outputs.enabled', 'kept_outputs_dtype': 'kept_outputs.dtype',
    'kept_outputs_max_bytes': 'kept_outputs.max_bytes',
    'distributed': 'distributed.enabled',  # The flag before the group (config.json: a bool).
    'coordinator_address': 'distributed.coordinator_address',
    'num_processes': 'distributed.num_processes', 'process_id': 'distributed.process_id',
    'distributed_timeout': 'distributed.timeout', 'host_pool': 'distributed.host_pool',
}


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


def flatten(fields: Mapping) -> dict:
  """{'group.field': value} of nested config fields (a config.json, config.to_dict())."""
  return {path: value for path, value in _items(fields)}


def _items(fields: Mapping, prefix: str = '') -> Iterable[tuple[str, Any]]:
  for name, value in fields.items():
    if isinstance(value, Mapping):
      yield from _items(value, f'{prefix}{name}.')
    else:
      yield prefix + name, value


def unflatten(fields: Mapping[str, Any]) -> dict:
  """Nested dicts of {'group.field': value}."""
  out: dict = {}
  for path, value in fields.items():
    *groups, name = path.split('.')
    node = out
    for group in groups:
      node = node.setdefault(group, {})
    node[name] = value
  return out


def new_name(name: str, value: Any = None) -> str:
  """Today's path of a saved field `name` (RENAMED_FIELDS); 'distributed' was a bool flag."""
  if name == 'distributed' and not isinstance(value, bool):
    return name
  return RENAMED_FIELDS.get(name, name)


def unknown_fields_message(names: Iterable[str]) -> str:
  """The one-line error for config fields that tod_jax does not read: a renamed one with its
  new name, others each with a did-you-mean."""
  known = sorted(known_fields())
  parts = []
  for name in sorted(names):
    close = difflib.get_close_matches(name, known, n=1)
    if name in RENAMED_FIELDS:
      parts.append(f'{name!r} (now {RENAMED_FIELDS[name]!r})')
    else:
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
  unknown += [name for name, value in config.items()  # An old flag where a group is now.
              if name in RENAMED_FIELDS and not hasattr(value, 'items')
              and hasattr(default.get_config().get(name), 'items')]
  if unknown:
    raise ConfigError(unknown_fields_message(unknown))
