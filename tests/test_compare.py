"""The comparison runner: the summary table by hand, the ablation plan, a tiny end-to-end run."""

import csv
import os

import numpy as np

from conftest import make_tiny_config
from tod_jax import compare


def _row(strategy, seed, cycle, acc):
  return {'strategy': strategy, 'seed': seed, 'cycle': cycle, 'num_labeled': 10 * cycle,
          'labeled_fraction': 0.1 * cycle, 'test_accuracy': acc}


def test_summary_has_mean_and_sample_std_and_bolds_the_best():
  rows = [_row('random', 0, 1, 0.80), _row('random', 1, 1, 0.90), _row('random', 0, 2, 0.90),
          _row('random', 1, 2, 0.90), _row('cod', 0, 1, 0.84), _row('cod', 1, 1, 0.84),
          _row('cod', 0, 2, 0.95), _row('cod', 1, 2, 0.99)]
  table = compare.summary_markdown(rows)
  # random cycle 1: mean 85, sample std sqrt(50) = 7.07; cod cycle 2: 97 +- sqrt(8) = 2.83.
  assert '| random | **85.0 ± 7.1** | 90.0 ± 0.0 |' in table
  assert '| cod | 84.0 ± 0.0 | **97.0 ± 2.8** |' in table
  assert '| strategy | 10% labeled | 20% labeled |' in table


def test_ablation_plan_is_table_one():
  config = make_tiny_config()
  plan = compare.plan_runs(config, [], [0, 1], ablation=True)
  assert [(n, s, c.strategy, c.semi, c.seed) for n, s, c in plan[::2]] == [
      ('Base', 0, 'random', False, 0), ('Base+Semi', 0, 'random', True, 0),
      ('Base+Active', 0, 'cod', False, 0), ('Base+Semi+Active', 0, 'cod', True, 0)]
  assert plan[1][2].seed == 1 and config.seed == 0  # The base config is not modified.
  assert compare.run_dir('/w', 'Base+Semi', 1) == os.path.join('/w', 'base_semi_seed1')


def test_label_noise_sweep_plan_names_each_probability():
  config = make_tiny_config()
  plan = compare.plan_runs(config, ['cod', 'random'], [0], label_noises=[0, 0.2])
  assert [(n, c.strategy, c.label_noise) for n, _, c in plan] == [
      ('cod_noise0', 'cod', 0.0), ('random_noise0', 'random', 0.0),
      ('cod_noise0.2', 'cod', 0.2), ('random_noise0.2', 'random', 0.2)]
  assert compare.run_dir('/w', plan[2][0], 1) == os.path.join('/w', 'cod_noise0.2_seed1')
  assert [n for n, _, _ in compare.plan_runs(config, ['cod'], [0])] == ['cod']  # No sweep.


def test_sampling_time_table_by_hand():
  rows = [dict(_row('cod', s, c, 0.9), score_seconds=t) for s, c, t in
          ((0, 1, 1.0), (0, 2, 2.0), (1, 1, 3.0))] + [dict(_row('random', 0, 1, 0.9),
                                                           score_seconds=0.01)]
  table = compare.sampling_time_markdown(rows, 'a test machine')
  assert 'on a test machine' in table
  assert '| cod | 2.00 ± 1.00 | 2.00 | 3 |' in table  # Mean 2, sample std 1; cycle 2 alone.
  assert '| random | 0.01 ± 0.00 | — | 1 |' in table


def test_runner_writes_all_three_outputs(tmp_path):
  config = make_tiny_config()
  config.num_cycles, config.num_epochs = 1, 1
  rows = compare.compare(config, ['random', 'entropy'], [0], str(tmp_path))
  with open(tmp_path / 'results.csv') as f:
    table = list(csv.DictReader(f))
  assert [(r['strategy'], r['seed'], r['cycle'], r['num_labeled']) for r in table] == [
      ('random', '0', '1', '144'), ('entropy', '0', '1', '144')]
  np.testing.assert_allclose([float(r['test_accuracy']) for r in table],
                             [r['test_accuracy'] for r in rows])
  summary = (tmp_path / 'summary.md').read_text()
  assert '| random |' in summary and '| entropy |' in summary and '**' in summary
  assert 'seconds per query step' in summary and compare.machine_name() in summary
  with open(tmp_path / 'learning_curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # Finished runs are skipped: a second call trains nothing and returns the same rows.
  assert compare.compare(config, ['random', 'entropy'], [0], str(tmp_path)) == rows
