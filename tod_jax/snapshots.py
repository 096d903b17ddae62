"""Copies of a model taken a given number of steps or epochs before the end of training.

They are the baselines w~ of COD over other intervals than a whole cycle: the
model selection of Section V (Eq. 10, tod_jax.candidates) and Fig. 7's COD over
different numbers of gradient steps (config.snapshot_intervals, tod_jax.analyze).
"""

import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from tod_jax.errors import ConfigError

_INTERVAL = re.compile(r'^(\d+)(steps?|epochs?)$')


def parse_interval(spec: str, steps_per_epoch: int) -> int:
  """'5steps' -> 5, '2epochs' -> 2 * steps_per_epoch (singular forms accepted)."""
  match = _INTERVAL.match(spec)
  if match is None or int(match.group(1)) < 1:
    raise ConfigError(f'Bad snapshot interval {spec!r}; use a positive count followed by '
                     "'steps' or 'epochs', e.g. '5steps' or '1epoch'.")
  count = int(match.group(1))
  return count * steps_per_epoch if match.group(2).startswith('epoch') else count


def parse_specs(text: str) -> tuple[str, ...]:
  """'5steps, 1epoch' -> ('5steps', '1epoch'); each checked by parse_interval."""
  specs = tuple(s.strip() for s in text.split(',') if s.strip())
  for spec in specs:
    parse_interval(spec, 1)
  return specs


class Snapshots:
  """Keeps, per interval spec, the variables that many steps before step `total_steps`.

  Pass `on_step` to tod_jax.train.train_cycle. An interval of the whole run
  (or longer, with clip=True) keeps `start_variables`; `steps_back` holds the
  interval each snapshot really has, in steps.
  """

  def __init__(self, specs: Iterable[str], steps_per_epoch: int, total_steps: int,
               start_variables: Any, clip: bool = False):
    self.steps_back = {spec: parse_interval(spec, steps_per_epoch) for spec in specs}
    too_long = {spec: n for spec, n in self.steps_back.items() if n > total_steps}
    if too_long and not clip:
      raise ConfigError(f'Snapshot intervals {too_long} (steps) exceed the {total_steps} '
                       'training steps; shorten them or raise --config.num_epochs.')
    self.steps_back = {spec: min(n, total_steps) for spec, n in self.steps_back.items()}
    self.variables = {spec: jax.tree.map(jnp.copy, start_variables)
                      for spec, n in self.steps_back.items() if n == total_steps}
    self._wanted: dict[int, list[str]] = {}
    for spec, n in self.steps_back.items():
      self._wanted.setdefault(total_steps - n, []).append(spec)

  @property
  def steps(self) -> tuple[int, ...]:
    """The step counts whose states `on_step` must see (train_cycle's stop_at)."""
    return tuple(sorted(self._wanted))

  def on_step(self, state: Any, steps_done: int) -> None:
    for spec in self._wanted.get(steps_done, ()):
      self.variables[spec] = jax.tree.map(jnp.copy, state.variables)
