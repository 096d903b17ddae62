"""The comparison runner: the summary table by hand, the ablation plan, a tiny end-to-end run,
runs at once against one after another, --summarize over run directories by hand."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, cpu_env, make_tiny_config
from tod_jax import compare, errors, rundir


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


def _tiny_run_config():
  config = make_tiny_config()
  config.num_cycles, config.num_epochs = 1, 1
  return config


@pytest.fixture(scope='module')
def tiny_comparison(tmp_path_factory):
  """(workdir, rows) of random and entropy, seed 0, one cycle of one epoch, run here."""
  workdir = tmp_path_factory.mktemp('sequential')
  return workdir, compare.compare(_tiny_run_config(), ['random', 'entropy'], [0], str(workdir))


def test_runner_writes_all_three_outputs(tiny_comparison):
  tmp_path, rows = tiny_comparison
  config = _tiny_run_config()
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


def _metrics(path):
  """metrics.jsonl without its timings."""
  return [{k: v for k, v in r.items() if not k.endswith('_seconds')}
          for r in rundir.read_metrics(path)]


def test_runs_at_once_compute_what_runs_one_after_another_do(tiny_comparison, tmp_path, capfd):
  sequential, rows = tiny_comparison
  untimed = lambda rows: [{k: v for k, v in r.items() if k != 'score_seconds'} for r in rows]
  assert untimed(compare.compare(_tiny_run_config(), ['random', 'entropy'], [0],
                                 str(tmp_path), processes=2)) == untimed(rows)
  assert '[entropy_seed0] ' in capfd.readouterr().err  # Each worker's lines name its run.
  for name in ('random_seed0', 'entropy_seed0'):
    assert _metrics(tmp_path / name) == _metrics(sequential / name)
    np.testing.assert_array_equal(rundir.final_labeled(str(tmp_path / name)),
                                  rundir.final_labeled(str(sequential / name)))  # The queries.
  assert '2 runs at a time' in (tmp_path / 'summary.md').read_text()


def _fake_run(workdir, name, seed, accuracies):
  """A run directory as a comparison leaves it: config.json and metrics.jsonl."""
  path = workdir / f'{name}_seed{seed}'
  path.mkdir()
  (path / 'config.json').write_text(json.dumps({'label_noise': 0.0}))
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(
      {'cycle': c + 1, 'num_labeled': 10 * (c + 2), 'labeled_fraction': 0.05 * (c + 2),
       'test_accuracy': a, 'score_seconds': 0.5}) + '\n' for c, a in enumerate(accuracies)))


def test_summarize_pairs_existing_run_directories_by_hand(tmp_path):
  for seed, (random, cod) in enumerate((((0.80, 0.90, 0.95), (0.80, 0.91, 0.95)),
                                        ((0.70, 0.90, 0.94), (0.70, 0.92, 0.95)),
                                        ((0.75, 0.90, 0.93), (0.75, 0.93, 0.95)))):
    _fake_run(tmp_path, 'random', seed, random)
    _fake_run(tmp_path, 'cod', seed, cod)
  _fake_run(tmp_path, 'cod', 3, (0.1, 0.1, 0.1))  # No random run of seed 3: left out.
  (tmp_path / 'notes').mkdir()
  before = sorted(str(p) for p in tmp_path.rglob('*'))
  result = subprocess.run(
      [sys.executable, '-m', 'tod_jax.compare', '--summarize', f'--workdir={tmp_path}'],
      cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  added = sorted(set(str(p) for p in tmp_path.rglob('*')) - set(before))
  assert added == [str(tmp_path / f) for f in (
      'learning_curves.png', 'paired.csv', 'results.csv', 'summary.md')]  # Nothing ran.
  with open(tmp_path / 'paired.csv') as f:
    table = {r['cycles']: r for r in csv.DictReader(f)}
  # cod - random, points: cycle 2 +1, +2, +3; cycle 3 0, +1, +2; cycles 2-3 per seed
  # 0.5, 1.5, 2.5. Each: sample sd 1, half-width t_{0.975,2} / sqrt(3) = 2.4841.
  half = np.sqrt(2 / (0.05 * 1.95) - 2) / np.sqrt(3)
  for cycles, mean, wins, ties in (('2', 2.0, 3, 0), ('3', 1.0, 2, 1), ('2-3', 1.5, 3, 0)):
    row = table[cycles]
    assert (row['strategy'], row['baseline'], row['seeds']) == ('cod', 'random', '3')
    np.testing.assert_allclose([float(row[k]) for k in (
        'mean_diff_points', 'sd_points', 'ci_low_points', 'ci_high_points')],
                               [mean, 1.0, mean - half, mean + half], atol=1e-6)
    assert (int(row['wins']), int(row['ties']), int(row['losses'])) == (wins, ties, 0)
  assert (table['1']['ties'], table['1']['mean_diff_points']) == ('3', '0.0')
  assert '| cod | +0.00 [+0.00, +0.00] 0/3/0 | +2.00 [-0.48, +4.48] 3/0/0 |' in result.stdout
  assert 'cod − random' not in result.stdout and '| strategy − random |' in result.stdout
  summary = (tmp_path / 'summary.md').read_text()
  assert 'mean 15–20% (cycles 2-3)' in summary and 'not recorded' in summary


def test_a_baseline_not_compared_and_a_workdir_without_runs_are_refused_first(tmp_path):
  with pytest.raises(errors.ConfigError, match=r'--baseline margin is not among the compared '
                     r'runs \(random, cod\); pass one of them'):
    compare.compare(_tiny_run_config(), ['random', 'cod'], [0], str(tmp_path / 'w'),
                    baseline='margin')
  (tmp_path / 'other_seed0').mkdir()  # No metrics.jsonl: not a run of a comparison.
  with pytest.raises(errors.MissingFileError, match='holds no run directory <name>_seed<k>'):
    compare.summarize(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['other_seed0']  # Nothing written.
