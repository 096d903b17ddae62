"""Paired statistics against hand-computed values: t intervals, W/T/L, unpaired seeds, tables."""

import numpy as np
import pytest

from tod_jax import paired

# t_{0.975, 2} in closed form: for 2 degrees of freedom the two-sided a-quantile is
# sqrt(2 / (a (2 - a)) - 2); a = 0.05 gives 4.3027 (tables).
T_975_2 = np.sqrt(2 / (0.05 * 1.95) - 2)


def _row(strategy, seed, cycle, acc):
  return {'strategy': strategy, 'seed': seed, 'cycle': cycle,
          'labeled_fraction': 0.05 + 0.05 * cycle, 'test_accuracy': acc}


def test_t_interval_by_hand():
  interval = paired.t_interval([1.0, 2.0, 3.0])  # Mean 2, sample sd 1.
  half = T_975_2 * 1.0 / np.sqrt(3)  # 2.4841
  assert (interval.n, interval.mean, interval.sd) == (3, 2.0, 1.0)
  np.testing.assert_allclose([interval.low, interval.high], [2 - half, 2 + half], rtol=1e-12)
  np.testing.assert_allclose(half, 2.4841, atol=1e-4)
  one = paired.t_interval([0.5])
  assert (one.n, one.mean, one.low, one.high) == (1, 0.5, None, None)


def _rows():
  """Seeds 0-2 paired; cod's seed 3 has no random run. Cycle 1 equal (ties)."""
  rows = []
  for seed, (r2, r3, c2, c3) in enumerate(((0.90, 0.92, 0.91, 0.93), (0.90, 0.95, 0.92, 0.95),
                                          (0.90, 0.93, 0.93, 0.92))):
    rows += [_row('random', seed, 1, 0.8), _row('random', seed, 2, r2),
             _row('random', seed, 3, r3), _row('cod', seed, 1, 0.8), _row('cod', seed, 2, c2),
             _row('cod', seed, 3, c3)]
  return rows + [_row('cod', 3, 1, 0.8), _row('cod', 3, 2, 0.5), _row('cod', 3, 3, 0.5)]


def test_paired_stats_by_hand():
  results = {p.cycles: p for p in paired.paired_stats(_rows(), 'random')}
  assert list(results) == [(1,), (2,), (3,)] + [(2, 3)]
  first = results[(1,)]
  assert (first.interval.n, first.interval.mean, first.interval.sd) == (3, 0.0, 0.0)
  assert (first.wins, first.ties, first.losses) == (0, 3, 0)
  # Cycle 2: differences +1, +2, +3 points (seed 3 unpaired, left out).
  second = results[(2,)]
  half = T_975_2 / np.sqrt(3)
  np.testing.assert_allclose([second.interval.mean, second.interval.sd], [2.0, 1.0])
  np.testing.assert_allclose([second.interval.low, second.interval.high], [2 - half, 2 + half])
  assert (second.wins, second.ties, second.losses, second.interval.n) == (3, 0, 0, 3)
  np.testing.assert_allclose(second.labeled_percent, 15.0)
  # Cycle 3: +1, 0, -1: one each.
  third = results[(3,)]
  assert (third.wins, third.ties, third.losses) == (1, 1, 1)
  np.testing.assert_allclose([third.interval.mean, third.interval.sd], [0.0, 1.0], atol=1e-9)
  # Late mean (cycles 2-3) per seed: (1+1)/2 = 1, (2+0)/2 = 1, (3-1)/2 = 1: sd 0, three wins.
  late = results[(2, 3)]
  np.testing.assert_allclose([late.interval.mean, late.interval.low, late.interval.high],
                             [1.0, 1.0, 1.0], atol=1e-9)
  assert (late.wins, late.ties, late.losses, late.strategy, late.baseline) == (
      3, 0, 0, 'cod', 'random')


def test_late_mean_leaves_out_seeds_without_every_cycle():
  rows = _rows()[:-1]  # cod seed 3 and random seed 2 lose their last cycle.
  rows = [r for r in rows if not (r['strategy'] == 'random' and r['seed'] == 2
                                  and r['cycle'] == 3)]
  results = {p.cycles: p for p in paired.paired_stats(rows, 'random')}
  assert results[(3,)].interval.n == 2 and results[(2, 3)].interval.n == 2
  np.testing.assert_allclose(results[(2, 3)].interval.mean, 1.0)


def test_bands_are_t_intervals_of_the_mean_accuracy():
  frac, mean, low, high = paired.accuracy_bands(_rows())['random']
  np.testing.assert_allclose(frac, [10, 15, 20])
  np.testing.assert_allclose(mean, [80, 90, 100 * (0.92 + 0.95 + 0.93) / 3])
  sd = 100 * np.std([0.92, 0.95, 0.93], ddof=1)
  np.testing.assert_allclose(high[2] - mean[2], T_975_2 * sd / np.sqrt(3))
  np.testing.assert_allclose([low[0], high[0]], [80, 80])  # Equal seeds: no width.


def test_csv_rows_and_markdown():
  results = paired.paired_stats(_rows(), 'random')
  rows = paired.csv_rows(results)
  assert set(rows[0]) == set(paired.FIELDS)
  second = rows[1]
  assert (second['cycles'], second['seeds'], second['wins'], second['ties']) == ('2', 3, 3, 0)
  assert second['mean_diff_points'] == pytest.approx(2.0)
  assert second['ci_low_points'] == pytest.approx(2 - T_975_2 / np.sqrt(3), abs=1e-6)
  assert rows[-1]['cycles'] == '2-3'
  table = paired.markdown(results, 'random')
  assert '| strategy − random | 10% | 15% | 20% | mean 15–20% (cycles 2-3) |' in table
  assert '| cod | +0.00 [+0.00, +0.00] 0/3/0 | +2.00 [-0.48, +4.48] 3/0/0 |' in table
  one = paired.paired_stats([_row('random', 0, 1, 0.5), _row('cod', 0, 1, 0.6)], 'random')
  assert '+10.00 (1 seed, no interval) 1/0/0' in paired.markdown(one, 'random')
