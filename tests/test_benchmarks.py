"""Benchmarks run in smoke mode (tiny sizes); no timing is asserted."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import score_benchmark  # noqa: E402  pylint: disable=g-import-not-at-top


def test_score_benchmark_smoke(capsys):
  rates = score_benchmark.main(['--smoke'])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  by_impl = {line['impl']: line for line in lines if 'impl' in line and 'seconds' in line}
  assert by_impl['tod_jax_kept_outputs']['forward_passes_per_image'] == 1
  assert by_impl['tod_jax_two_pass']['forward_passes_per_image'] == 2
  for line in by_impl.values():
    assert line['pool'] == 24 and line['images_per_s'] > 0
  assert set(rates) == set(by_impl)
  assert 'kept_vs_two_pass' in lines[-1]['ratios']
