"""Loss-estimation diagnostics: measures by hand, and every output of a tiny 2-cycle run."""

import csv
import os

import numpy as np
import pytest

from conftest import make_tiny_config
from tod_jax import analyze, driver


def test_spearman_by_hand():
  # No ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 120.
  assert analyze.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
  # Ties get average ranks: Pearson of ranks [1, 2, 3, 4] and [1.5, 1.5, 3, 4] = sqrt(0.9).
  assert analyze.spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(np.sqrt(0.9))
  assert analyze.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_binned_mean_by_descending_score():
  scores = [0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6]
  values = [1, 2, 3, 4, 5, 6, 7, 8]
  # Descending score: values 1, 6 | 4, 8 | 3, 5 | 7, 2.
  np.testing.assert_allclose(analyze.binned_mean(scores, values, 0.25), [3.5, 6.0, 4.0, 4.5])
  means = analyze.binned_mean(np.arange(100.0), np.arange(100.0), 0.05)
  assert means.shape == (20,)
  np.testing.assert_allclose(means[[0, -1]], [97.0, 2.0])  # Top 5: 99..95; last: 4..0.


def test_recall_curve_by_hand():
  losses = np.arange(10.0)
  fractions = (0.1, 0.5, 0.6, 1.0)
  np.testing.assert_allclose(analyze.recall_curve(losses, losses, fractions), 1.0)
  np.testing.assert_allclose(analyze.recall_curve(2 * losses + 1, losses), 1.0)
  # Reversed: top-6 scores {0..5} vs top-6 losses {4..9} share {4, 5}.
  np.testing.assert_allclose(analyze.recall_curve(-losses, losses, fractions),
                             [0.0, 0.0, 2 / 6, 1.0])


def test_per_sample_cross_entropy_by_hand():
  logits = np.array([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
  np.testing.assert_allclose(analyze.per_sample_cross_entropy(logits, np.array([1, 0])),
                             [np.log(4 / 3), np.log(4.0)])


def test_analyze_tiny_run_writes_every_file(tmp_path):
  config = make_tiny_config()
  config.strategy = 'll4al'  # Its predicted loss is one of the scores compared.
  config.snapshot_intervals = '1step,1epoch'
  config.num_epochs = 1  # Fast; '1epoch' is then the cycle's start, w_{c-1}.
  workdir = str(tmp_path / 'run')
  driver.run(config, workdir)
  out = analyze.analyze(workdir, tsne_max_labeled=40)
  expected = {'summary.md', 'cycles.csv', 'fig3_cod_loss.png', 'loss_bins.csv',
              'fig5_loss_bins.png', 'recall.csv', 'fig6_recall.png', 'cod_intervals.csv',
              'fig7_cod_intervals.png', 'tsne.csv', 'fig14_tsne.png'}
  assert set(os.listdir(out)) == expected
  for name in expected:
    if name.endswith('.png'):
      with open(os.path.join(out, name), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(os.path.join(out, 'cycles.csv')) as f:
    cycles = list(csv.DictReader(f))
  assert [r['cycle'] for r in cycles] == ['1', '2']
  assert [int(r['num_labeled']) + int(r['num_unlabeled']) for r in cycles] == [1437, 1437]
  assert {'spearman_cod', 'spearman_entropy', 'spearman_margin', 'spearman_ll4al'} <= set(
      cycles[0])
  with open(os.path.join(out, 'cod_intervals.csv')) as f:
    intervals = list(csv.DictReader(f))
  assert sorted({r['baseline'] for r in intervals}) == ['1cycle', '1epoch', '1step']
  with open(os.path.join(out, 'tsne.csv')) as f:
    tsne = list(csv.DictReader(f))
  assert sum(r['queried'] == '1' for r in tsne) == 72  # The last cycle's query.
  assert len(tsne) == 40 + 72
  summary = open(os.path.join(out, 'summary.md')).read()
  assert 'Spearman' in summary and 'Fig. 7' in summary and 'Skipped' not in summary
