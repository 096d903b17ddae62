"""Strategies against a baseline, paired by seed: mean difference, 95% interval, W/T/L.

Every strategy of a seed starts from the same random labeled set and initial weights,
so the seed's own luck cancels in its difference. Conventions (accuracy points, %):

  d_s       = 100 * (accuracy of the strategy - accuracy of the baseline), seed s; only
              the seeds that both ran count (an unpaired seed is left out)
  interval  = mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n), sd with ddof=1; none for n = 1
  W / T / L = seeds with d > 0 / d = 0 (the same test images right) / d < 0
  late      = each seed's mean over cycles 2..N (cycle 1 trains every strategy of a
              seed on the same random set); a seed counts if both ran all of those cycles

Rows are compare's result rows: dicts with strategy, seed, cycle, labeled_fraction,
test_accuracy (a fraction).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
from scipy import stats

from tod_jax.errors import ConfigError

DEFAULT_BASELINE = 'random'
CONFIDENCE = 0.95
TIE = 1e-9  # |d| up to this is a tie: equal accuracies, up to float rounding of the means.
FIELDS = ('strategy', 'baseline', 'cycles', 'labeled_percent', 'seeds', 'mean_diff_points',
          'sd_points', 'ci_low_points', 'ci_high_points', 'wins', 'ties', 'losses')


@dataclasses.dataclass(frozen=True)
class Interval:
  """Mean of n values with its t interval; low and high are None for n = 1."""
  n: int
  mean: float
  sd: float
  low: Optional[float]
  high: Optional[float]


@dataclasses.dataclass(frozen=True)
class Paired:
  """One strategy minus the baseline over `cycles` (one cycle, or the late cycles)."""
  strategy: str
  baseline: str
  cycles: tuple[int, ...]
  labeled_percent: float  # Of the cycle; of the last one for the late mean.
  interval: Interval
  wins: int
  ties: int
  losses: int


def choose_baseline(names: Sequence[str], baseline: Optional[str] = None) -> str:
  """`baseline`, which must be one of `names`; None: 'random' if compared, else the first."""
  if baseline is None:
    return DEFAULT_BASELINE if DEFAULT_BASELINE in names else names[0]
  if baseline not in names:
    raise ConfigError(f'--baseline {baseline} is not among the compared runs '
                      f'({", ".join(dict.fromkeys(names))}); pass one of them.')
  return baseline


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
  """mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n) of `values` (n >= 1)."""
  values = np.asarray(values, np.float64)
  n, mean = len(values), float(np.mean(values))
  if n < 2:
    return Interval(n, mean, float('nan'), None, None)
  sd = float(np.std(values, ddof=1))
  half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / np.sqrt(n)
  return Interval(n, mean, sd, mean - half, mean + half)


def accuracies(rows: Sequence[dict]) -> dict:
  """{name: {seed: {cycle: accuracy in points}}}, names in row order."""
  out: dict = {}
  for r in rows:
    out.setdefault(r['strategy'], {}).setdefault(r['seed'], {})[r['cycle']] = (
        100.0 * r['test_accuracy'])
  return out


def late_cycles(rows: Sequence[dict]) -> tuple[int, ...]:
  """Cycles 2..N: every cycle after the first that any row has (the late mean needs two)."""
  return tuple(sorted({r['cycle'] for r in rows} - {1}))


def _labeled_percent(rows: Sequence[dict]) -> dict:
  """{cycle: % of the pool labeled}, the mean over rows (equal in a comparison)."""
  per: dict = {}
  for r in rows:
    per.setdefault(r['cycle'], []).append(100.0 * r['labeled_fraction'])
  return {c: float(np.mean(v)) for c, v in per.items()}


def _paired(name: str, baseline: str, cycles: tuple[int, ...], percent: float,
            differences: list[float]) -> Paired:
  d = np.asarray(differences)
  return Paired(name, baseline, cycles, percent, t_interval(d), int(np.sum(d > TIE)),
                int(np.sum(np.abs(d) <= TIE)), int(np.sum(d < -TIE)))


def paired_stats(rows: Sequence[dict], baseline: str) -> list[Paired]:
  """Every other strategy against `baseline`: one Paired per cycle, then the late mean."""
  acc, percent, late = accuracies(rows), _labeled_percent(rows), late_cycles(rows)
  base = acc[baseline]
  out = []
  for name, runs in acc.items():
    if name == baseline:
      continue
    seeds = [s for s in runs if s in base]
    for c in sorted({c for s in seeds for c in runs[s]}):
      diffs = [runs[s][c] - base[s][c] for s in seeds if c in runs[s] and c in base[s]]
      if diffs:
        out.append(_paired(name, baseline, (c,), percent[c], diffs))
    full = [s for s in seeds if all(c in runs[s] and c in base[s] for c in late)]
    if len(late) > 1 and full:  # With one late cycle, that cycle's row says it.
      diffs = [np.mean([runs[s][c] - base[s][c] for c in late]) for s in full]
      out.append(_paired(name, baseline, late, percent[late[-1]], diffs))
  return out


def accuracy_bands(rows: Sequence[dict]) -> dict:
  """{name: (labeled %, mean, low, high)} per cycle, arrays in points: the mean accuracy
  over seeds with its t interval (low = high = mean where a cycle has one seed)."""
  percent = _labeled_percent(rows)
  out = {}
  for name, runs in accuracies(rows).items():
    cycles = sorted({c for per in runs.values() for c in per})
    bands = [t_interval([per[c] for per in runs.values() if c in per]) for c in cycles]
    out[name] = tuple(np.array(v, np.float64) for v in (
        [percent[c] for c in cycles], [b.mean for b in bands],
        [b.mean if b.low is None else b.low for b in bands],
        [b.mean if b.high is None else b.high for b in bands]))
  return out


def cycles_label(cycles: tuple[int, ...]) -> str:
  """'3' for one cycle, '2-7' for a run of cycles."""
  return str(cycles[0]) if len(cycles) == 1 else f'{cycles[0]}-{cycles[-1]}'


def csv_rows(results: Sequence[Paired]) -> list[dict]:
  """paired.csv: one row per strategy and cycle (and late mean); empty interval for n = 1."""
  number = lambda x: '' if x is None or np.isnan(x) else round(x, 6)
  return [{'strategy': p.strategy, 'baseline': p.baseline, 'cycles': cycles_label(p.cycles),
           'labeled_percent': round(p.labeled_percent, 4), 'seeds': p.interval.n,
           'mean_diff_points': number(p.interval.mean), 'sd_points': number(p.interval.sd),
           'ci_low_points': number(p.interval.low), 'ci_high_points': number(p.interval.high),
           'wins': p.wins, 'ties': p.ties, 'losses': p.losses} for p in results]


def cell(p: Paired) -> str:
  """'+1.24 [+0.95, +1.53] 9/1/0': mean difference [95% interval] wins/ties/losses."""
  i = p.interval
  spread = f'[{i.low:+.2f}, {i.high:+.2f}]' if i.low is not None else '(1 seed, no interval)'
  return f'{i.mean:+.2f} {spread} {p.wins}/{p.ties}/{p.losses}'


def markdown(results: Sequence[Paired], baseline: str) -> str:
  """The paired table: one row per strategy, one column per cycle, then the late mean."""
  if not results:
    return f'No strategy to pair with {baseline}: compare at least two.\n'
  singles = sorted({p.cycles for p in results if len(p.cycles) == 1})
  late = sorted({p.cycles for p in results if len(p.cycles) > 1}, key=len)
  percent = {p.cycles: p.labeled_percent for p in results}
  first = {p.cycles: p.labeled_percent for p in results if len(p.cycles) == 1}
  heads = [f'{percent[c]:.0f}%' for c in singles]
  heads += [f'mean {first[(c[0],)]:.0f}–{percent[c]:.0f}% (cycles {cycles_label(c)})'
            if (c[0],) in first else f'mean of cycles {cycles_label(c)}' for c in late]
  seeds = max(p.interval.n for p in results)
  lines = [f'Paired by seed against {baseline}: strategy − {baseline}, test accuracy points, '
           f'mean [95% t interval] wins/ties/losses over the seeds both ran (up to {seeds}); '
           'the late mean is each seed\'s mean over cycles 2..N (cycle 1 trains every '
           'strategy of a seed on the same random set).', '',
           f'| strategy − {baseline} | ' + ' | '.join(heads) + ' |',
           '|---|' + '---|' * len(heads)]
  for name in dict.fromkeys(p.strategy for p in results):
    own = {p.cycles: p for p in results if p.strategy == name}
    lines.append(f'| {name} | ' + ' | '.join(
        cell(own[c]) if c in own else '—' for c in singles + late) + ' |')
  return '\n'.join(lines) + '\n'
