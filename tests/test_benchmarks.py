"""Benchmarks run in smoke mode (tiny sizes); no timing is asserted.

Each script prints one JSON line per measurement; these tests check the fields,
the number of lines, and that every ratio is the quotient of two printed lines.
Without torch (not in the test extra) the PyTorch baselines must report 'skipped'.
"""

import importlib.util
import json
import math
import os
import sys

import jax
import pytest

from conftest import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_utils  # noqa: E402
import conv_benchmark  # noqa: E402
import cycle_benchmark  # noqa: E402
import init_flatness  # noqa: E402
import score_benchmark  # noqa: E402
import train_benchmark  # noqa: E402

HAVE_TORCH = importlib.util.find_spec('torch') is not None


def _printed(capsys, returned):
  """The JSON lines printed; they must be exactly the lines main() returned."""
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{')]
  assert lines == returned
  for line in lines:
    assert line['device']['platform'] == jax.devices()[0].platform
    assert line['device']['count'] == jax.device_count()
    assert line['host']['cpu_count'] == os.cpu_count()
  return lines


def _check_ratios(lines, field, expected_pairs, key=lambda line: ()):
  """Every ratio line equals numerator[field] / denominator[field] of printed lines."""
  measured = {(line['impl'], *key(line)): line for line in lines if field in line}
  ratios = [line for line in lines if 'ratio' in line]
  assert sorted((r['numerator'], r['denominator'], *key(r)) for r in ratios) == sorted(
      expected_pairs)
  for r in ratios:
    assert r['field'] == field
    num, den = measured[(r['numerator'], *key(r))], measured[(r['denominator'], *key(r))]
    assert r['ratio'] == pytest.approx(num[field] / den[field], rel=1e-12)


def test_score_benchmark_smoke(capsys):
  lines = _printed(capsys, score_benchmark.main(['--smoke', '--peak_tflops=2']))
  measured = [line for line in lines if 'seconds' in line]
  impls = sorted({line['impl'] for line in measured})
  torch_impls = [i for i in impls if i.startswith('torch')]
  assert len(torch_impls) == int(HAVE_TORCH)
  assert len(measured) == len(impls) * 2  # Pools 16 and 24, chunk 8.
  for line in measured:
    passes = {'tod_jax_kept_outputs': 1}.get(line['impl'], 2)
    assert line['forward_passes_per_image'] == passes and line['chunk'] == 8
    assert line['images_per_s'] == pytest.approx(line['pool'] / line['seconds'])
    assert line['us_per_image'] == pytest.approx(1e6 / line['images_per_s'])
    assert line['flops'] > 0 and line['flop_floor_seconds'] == pytest.approx(
        line['flops'] / 2e12)
    assert line['seconds_over_flop_floor'] == pytest.approx(
        line['seconds'] / line['flop_floor_seconds'])
  flops = {line['pool']: line['flops'] for line in measured
           if line['impl'] == 'tod_jax_kept_outputs'}
  assert flops[24] == pytest.approx(flops[16] * 24 / 16)  # Per-image FLOPs times images.
  pairs = [('tod_jax_kept_outputs', 'tod_jax_two_pass', p) for p in (16, 24)]
  pairs += [(a, t, p) for t in torch_impls for p in (16, 24)
            for a in ('tod_jax_kept_outputs', 'tod_jax_two_pass')]
  pairs += [('tod_jax_evaluate', d, p) for p in (16, 24)
            for d in ('tod_jax_kept_outputs', 'tod_jax_evaluate_apart')]
  _check_ratios(lines, 'images_per_s', pairs, key=lambda line: (line['pool'],))
  if not HAVE_TORCH:
    assert any(line.get('impl') == 'torch_two_pass' and 'skipped' in line for line in lines)


def test_flop_floor_needs_the_peak():
  assert bench_utils.flop_floor(3e12, 6.0, None) == {'flops': 3e12}
  assert bench_utils.flop_floor(3e12, 6.0, 1.5) == {
      'flops': 3e12, 'peak_tflops': 1.5, 'flop_floor_seconds': 2.0, 'seconds_over_flop_floor': 3.0}


def test_train_benchmark_smoke(capsys):
  lines = _printed(capsys, train_benchmark.main(['--smoke']))
  measured = [line for line in lines if 'seconds' in line]
  assert [line['impl'] for line in measured][0] == 'tod_jax'
  assert len(measured) == 1 + int(HAVE_TORCH)
  for line in measured:
    assert (line['batch'], line['unlabeled_batch'], line['steps']) == (8, 8, 2)
    assert line['labeled_images_per_s'] == pytest.approx(2 * 8 / line['seconds'])
    assert line['images_per_s'] == pytest.approx(2 * line['labeled_images_per_s'])
    assert line['host_peak_rss_bytes'] > 0
  assert measured[0]['compile_seconds'] > 0
  if HAVE_TORCH:
    _check_ratios(lines, 'labeled_images_per_s', [('tod_jax', measured[1]['impl'])])
  else:
    assert lines[-1]['impl'] == 'torch' and 'skipped' in lines[-1]


def test_torch_baselines_are_skipped_without_torch(capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError.
  lines = _printed(capsys, score_benchmark.main(['--smoke', '--impl=torch']))
  assert len(lines) == 1 and lines[0]['impl'] == 'torch_two_pass'
  assert 'pip install torch==2.13.0' in lines[0]['skipped']


def test_conv_benchmark_smoke(capsys):
  # xla_default: XLA_FLAGS stays as it is (this process's JAX has started anyway).
  lines = _printed(capsys, conv_benchmark.main(['--smoke', '--cpu_convolutions=xla_default']))
  measured = [line for line in lines if 'seconds' in line]
  impls = sorted({line['impl'] for line in measured})
  assert len(impls) == 2 + int(HAVE_TORCH) and {'tod_jax', 'tod_jax_xla'} <= set(impls)
  assert len(measured) == len(impls) * 2 * 3  # Two shapes, three ops.
  for line in measured:
    assert line['op'] in conv_benchmark.OPS and line['batch'] == 4
    assert line['inverse_seconds'] == pytest.approx(1 / line['seconds'])
  if HAVE_TORCH:
    torch_impl = next(i for i in impls if i.startswith('torch'))
    pairs = [(jax_impl, torch_impl, op, size) for jax_impl in ('tod_jax_xla', 'tod_jax')
             for op in conv_benchmark.OPS for size in (32, 4)]
    _check_ratios(lines, 'inverse_seconds', pairs, key=lambda line: (line['op'], line['size']))
  else:
    assert lines[0]['impl'] == 'torch' and 'skipped' in lines[0]


def test_cycle_benchmark_fraction_smoke(capsys):
  # Pool round(0.004 * 50,000) = 200 synthetic CIFAR-shaped images, test 40; digits' protocol
  # (10% start, 5% budget) cut to 2 cycles of 2 epochs (one step each: batch 32).
  lines = _printed(capsys, cycle_benchmark.main(['--smoke', '--fraction=0.004']))
  cycles, fraction, full = lines[:2], lines[2], lines[3]
  assert len(lines) == 4 and [c['cycle'] for c in cycles] == [1, 2]
  assert [c['num_labeled'] for c in cycles] == [20, 30]
  assert [c['candidates'] for c in cycles] == [180, 170]
  assert [c['train_steps'] for c in cycles] == [2, 2]
  for c in cycles:
    assert (c['pool'], c['test']) == (200, 40)
    phases = [c[f'{p}_seconds'] for p in ('train', 'evaluate', 'score', 'select', 'checkpoint')]
    assert min(phases) >= 0 and c['total_seconds'] == pytest.approx(sum(phases))
    # Rates per image computed: the last chunk is padded (digits' chunk: 512).
    assert c['chunk'] == 512
    assert c['score_seconds_per_image'] == pytest.approx(c['score_seconds'] / 512)
    assert c['evaluate_seconds_per_image'] == pytest.approx(c['evaluate_seconds'] / (2 * 512))
    assert c['host_peak_rss_bytes'] > 0
  # The estimate of the fractional run, from cycle 2's rates, sums its parts.
  assert fraction['measured_seconds'] > 0 and fraction['rates_from_cycle'] == 2
  assert (fraction['protocol_train_steps'], fraction['protocol_scored_images']) == (4, 350)
  rates = cycles[1]
  assert rates['train_step_seconds'] == pytest.approx(
      rates['train_seconds'] - rates['train_first_step_seconds'])
  assert fraction['estimated_train_seconds'] == pytest.approx(4 * rates['train_step_seconds'])
  # Cycle 1 runs COD's two passes (no kept outputs yet), cycle 2 one: 3 padded chunks.
  assert fraction['estimated_score_seconds'] == pytest.approx(
      3 * 512 * rates['score_seconds_per_image'])
  # CIFAR-10 sizes, 200 epochs: 5,000 + 7,500 labeled, batch 32: 200 x (157 + 235) steps;
  # 45,000 + 42,500 scored.
  assert (full['protocol_pool'], full['protocol_test'], full['protocol_epochs']) == (
      50_000, 10_000, 200)
  assert (full['protocol_train_steps'], full['protocol_scored_images']) == (78_400, 87_500)
  assert full['estimated_train_seconds'] == pytest.approx(78_400 * rates['train_step_seconds'])
  for line in (fraction, full):
    assert line['estimate'] == 'from measured rates'
    assert line['estimated_seconds'] == pytest.approx(
        line['estimated_train_seconds'] + line['estimated_score_seconds'] +
        line['estimated_other_seconds'])
  assert math.isfinite(full['estimated_seconds'])


def test_cycle_benchmark_times_the_drivers_cycle_for_ll4al_with_the_cyclic_teacher(capsys):
  """The phase split comes from cycle.run_cycle's record, so every strategy and teacher runs."""
  lines = _printed(capsys, cycle_benchmark.main(
      ['--smoke', '--config.strategy=ll4al', '--config.loss_teacher=cyclic']))
  assert [c['cycle'] for c in lines] == [1, 2] and [c['num_labeled'] for c in lines] == [144, 216]
  for c in lines:
    assert (c['strategy'], c['loss_teacher']) == ('ll4al', 'cyclic')
    phases = [c[f'{p}_seconds'] for p in ('train', 'evaluate', 'score', 'select', 'checkpoint')]
    assert min(phases) >= 0 and c['total_seconds'] == pytest.approx(sum(phases))
    assert 0 < c['train_first_step_seconds'] < c['train_seconds']


PARITY = os.path.join(ROOT, 'benchmarks', 'reference_parity.py')


def _run_parity(*args, env=None):
  """Runs reference_parity.py in its own process (it stubs torchvision and patches torch);
  returns its JSON lines."""
  import subprocess  # pylint: disable=import-outside-toplevel
  result = subprocess.run([sys.executable, PARITY, *args], capture_output=True, text=True,
                          timeout=900, env=env or subprocess_env())
  assert result.returncode == 0, result.stdout + result.stderr
  return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]


def test_reference_parity_smoke():
  reference_dir = os.environ.get('TOD_REFERENCE_DIR', '')
  if not HAVE_TORCH or not os.path.isfile(os.path.join(reference_dir, 'main_TOD.py')):
    pytest.skip('needs torch and TOD_REFERENCE_DIR pointing at a checkout of siyuhuang/TOD')
  lines = _run_parity(f'--reference_dir={reference_dir}', '--seeds=0', '--num_cycles=2',
                      '--num_epochs=1')
  cycles = [line for line in lines if 'cycle' in line and 'summary' not in line]
  impls, strategies = ('reference', 'tod_jax'), ('cod', 'random')
  assert sorted((c['impl'], c['strategy'], c['cycle']) for c in cycles) == [
      (i, s, c) for i in impls for s in strategies for c in (1, 2)]
  for c in cycles:
    assert 0 <= c['test_accuracy'] <= 100 and c['seed'] == 0
    assert c['num_labeled'] == {1: 144, 2: 216}[c['cycle']]  # 10% of 1,437, then +72.
    assert c['train_seconds'] > 0 and c['score_seconds'] >= 0
  runs = [line for line in lines if 'wall_seconds' in line]
  assert sorted((r['impl'], r['strategy']) for r in runs) == [
      (i, s) for i in impls for s in strategies]
  summaries = {}
  for line in lines:
    if 'summary' in line:
      summaries.setdefault(line['summary'], []).append(line)
  accuracy = summaries['test_accuracy_per_cycle']
  assert sorted((a['impl'], a['strategy']) for a in accuracy) == [
      (i, s) for i in impls for s in strategies]
  for a in accuracy:
    assert a['cycles'] == [1, 2] and a['std_test_accuracy'] == [None, None]  # One seed.
    assert a['mean_test_accuracy'] == [c['test_accuracy'] for c in cycles
                                       if (c['impl'], c['strategy']) == (a['impl'], a['strategy'])]
  gaps = {g['impl']: g['gap'] for g in summaries['cod_minus_random']}
  assert sorted(gaps) == list(impls)
  for g in summaries['cod_minus_random']:
    late = {c['strategy']: c['test_accuracy'] for c in cycles
            if c['impl'] == g['impl'] and c['cycle'] == 2}
    assert g['gap'] == pytest.approx(late['cod'] - late['random'])
  if gaps['reference'] != 0:
    ratio, = summaries['gap_ratio']
    assert ratio['ratio'] == pytest.approx(gaps['tod_jax'] / gaps['reference'])
  walls = {w['impl']: w['mean_wall_seconds'] for w in summaries['wall']}
  speed, = summaries['speed_ratio']
  assert (speed['numerator'], speed['denominator']) == ('reference', 'tod_jax')
  assert speed['ratio'] == pytest.approx(walls['reference'] / walls['tod_jax'])


def test_reference_parity_on_synthetic_cifar_shaped_data_runs_tod_jax():
  """--synthetic_cifar: tod_jax's loop on random 32x32x3 images (the ResNet-18 run's data);
  --ablation runs it with the TOD loss on, then off, and prints their paired difference."""
  lines = _run_parity('--implementations=tod_jax', '--synthetic_cifar=40', '--seeds=0',
                      '--strategies=cod', '--num_cycles=2', '--num_epochs=1', '--ablation',
                      '--config.batch_size=8', '--config.unlabeled_batch_size=8')
  cycles = [line for line in lines if 'cycle' in line and 'summary' not in line]
  assert [(c['impl'], c['semi'], c['num_labeled']) for c in cycles] == [
      ('tod_jax', True, 4), ('tod_jax', True, 6), ('tod_jax', False, 4), ('tod_jax', False, 6)]
  assert [(line['semi'], line['num_cycles']) for line in lines if 'wall_seconds' in line] == [
      (True, 2), (False, 2)]
  effect, = [line for line in lines if line.get('summary') == 'tod_loss_effect']
  on, off = ([c['test_accuracy'] for c in cycles if c['semi'] == semi] for semi in (True, False))
  assert effect['mean_on_minus_off'] == pytest.approx([a - b for a, b in zip(on, off)])


def _parity_cycles(table: dict) -> list[dict]:
  """Per-cycle lines of reference_parity from {(impl, strategy, seed, semi): accuracies}."""
  return [{'impl': impl, 'strategy': strategy, 'seed': seed, 'semi': semi, 'cycle': n + 1,
           'num_labeled': 10 * (n + 2), 'test_accuracy': accuracy}
          for (impl, strategy, seed, semi), accuracies in table.items()
          for n, accuracy in enumerate(accuracies)]


def test_reference_parity_tod_loss_effect_and_gaps_by_hand():
  import reference_parity  # pylint: disable=import-outside-toplevel
  cycles = _parity_cycles({
      ('reference', 'random', 0, True): [90.0, 95.0, 97.0],
      ('reference', 'random', 0, False): [89.0, 95.5, 96.0],
      ('reference', 'random', 1, True): [91.0, 94.0, 98.0],
      ('reference', 'random', 1, False): [90.0, 94.0, 97.0],
      ('reference', 'random', 2, True): [92.0, 96.0, 99.0],  # Unpaired: left out.
      ('reference', 'cod', 0, True): [90.0, 97.0, 99.0],
      ('reference', 'cod', 1, True): [91.0, 96.0, 99.0],
      ('tod_jax', 'cod', 0, False): [90.0, 96.0, 98.0],
      ('tod_jax', 'random', 0, False): [90.0, 95.0, 96.0],
  })
  effect, = reference_parity.tod_loss_summaries(cycles)
  assert (effect['impl'], effect['strategy'], effect['seeds']) == ('reference', 'random', [0, 1])
  # Seed 0: +1, -0.5, +1; seed 1: +1, 0, +1.
  assert effect['mean_on_minus_off'] == pytest.approx([1.0, -0.25, 1.0])
  assert effect['cycles_at_least_equal'] == 2
  # Cycles 2..3 per seed: 0.25 and 0.5; mean 0.375, standard error 0.125.
  assert effect['late_mean_on_minus_off'] == pytest.approx(0.375)
  assert effect['late_standard_error'] == pytest.approx(0.125)
  gaps = {(g['impl'], g['semi']): g['gap'] for g in reference_parity.gap_summaries(cycles)
          if g['summary'] == 'cod_minus_random'}
  # Reference, on: seed 0 (98 - 96), seed 1 (97.5 - 96); tod_jax, off: 97 - 95.5.
  assert gaps == pytest.approx({('reference', True): 1.75, ('tod_jax', False): 1.5})


def test_reference_parity_summarize_reads_out_files(tmp_path):
  """--summarize: the summaries of run lines split over two --out files, nothing run."""
  cycles = _parity_cycles({('tod_jax', 'cod', 0, True): [90.0, 98.0],
                           ('tod_jax', 'random', 0, True): [90.0, 96.0],
                           ('tod_jax', 'cod', 1, True): [91.0, 97.0],
                           ('tod_jax', 'random', 1, True): [91.0, 96.0]})
  walls = [{'impl': 'tod_jax', 'strategy': c['strategy'], 'seed': c['seed'], 'semi': True,
            'wall_seconds': 2.0 + c['seed'], 'num_cycles': 2, 'num_epochs': 1}
           for c in cycles if c['cycle'] == 2]
  paths = []
  for seed in (0, 1):
    paths.append(tmp_path / f'seed{seed}.jsonl')
    paths[-1].write_text(''.join(json.dumps(r) + '\n' for r in cycles + walls
                                 if r['seed'] == seed) + '{"summary": "stale"}\n')
  lines = _run_parity('--summarize=' + ','.join(map(str, paths)))
  assert all('summary' in line for line in lines)
  gap, = [line for line in lines if line['summary'] == 'cod_minus_random']
  assert gap['seeds'] == [0, 1] and gap['gap'] == pytest.approx(1.5)  # (2 + 1) / 2.
  wall, = [line for line in lines if line['summary'] == 'wall']
  assert wall['num_runs'] == 4 and wall['mean_wall_seconds'] == pytest.approx(2.5)
  old = tmp_path / 'old.jsonl'  # A line from before `semi` existed.
  old.write_text(json.dumps({k: v for k, v in cycles[0].items() if k != 'semi'}) + '\n')
  import reference_parity  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match='without `semi`.*run those seeds again'):
    reference_parity.read_run_lines([str(paths[0]), str(old)])


def test_reference_parity_skips_without_checkout(tmp_path):
  env = {k: v for k, v in subprocess_env().items() if k != 'TOD_REFERENCE_DIR'}
  lines = _run_parity(f'--reference_dir={tmp_path}', env=env)
  assert len(lines) == 1 and lines[0]['impl'] == 'reference'
  assert 'main_TOD.py' in lines[0]['skipped'] and 'siyuhuang/TOD' in lines[0]['skipped']


def test_gpu_suite_smoke_mode_writes_every_section(tmp_path):
  """benchmarks/gpu_suite.sh smoke: the accelerator suite's wiring on this machine's device,
  with this interpreter."""
  import subprocess  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'results.jsonl'
  result = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'gpu_suite.sh'), 'smoke'],
                          env=subprocess_env(OUT_FILE=str(out), PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  impls = {line.get('impl') for line in lines}
  assert {'tod_jax_kept_outputs', 'tod_jax_two_pass', 'tod_jax', 'tod_jax_digits_run',
          'tod_jax_determinism'} <= impls
  assert any(line.get('cycle') == 1 and 'train_seconds' in line for line in lines)
  (digits,) = [line for line in lines if line.get('impl') == 'tod_jax_digits_run']
  assert digits['cycles'] == 1 and 0 <= digits['test_accuracy'][0] <= 1
  # Precision: 'default' against 'highest' (equal on a CPU, which computes float32 at both).
  (summary,) = [l for l in lines if l.get('kind') == 'overlap_summary' and l['measure'] == 'cod']
  assert summary['setting'] == 'default' and summary['cycles'] == [1]
  if jax.default_backend() == 'cpu':
    assert summary['mean_overlap'] == [1.0]
  # Determinism: stopped after cycle 1 and resumed in a new process, as the whole run.
  (determinism,) = [line for line in lines if line.get('impl') == 'tod_jax_determinism']
  assert determinism['deterministic'] and determinism['same_labeled_set']
  assert determinism['same_records'] and determinism['first_differing_cycle'] is None
  assert all(line['device']['platform'] == jax.devices()[0].platform for line in lines)


def test_init_flatness_prints_each_init_and_pytorch_is_flatter(capsys):
  lines = _printed(capsys, init_flatness.main(['--seeds=0']))
  means = {l['init']: l['mean_mean_sq_dev_from_uniform'] for l in lines if 'seeds' in l}
  assert {'tod_jax pytorch', 'tod_jax flax'} <= set(means)
  assert len([l for l in lines if 'seed' in l]) == len(means)  # One seed per init.
  assert means['tod_jax pytorch'] < means['tod_jax flax'] / 5
  if not HAVE_TORCH:
    assert any(l.get('impl') == 'torch' and 'skipped' in l for l in lines)


def test_targets_smoke_prints_each_target_from_its_benchmarks(capsys):
  """benchmarks/targets.py --smoke: every part runs in its own process and each of the four
  targets is one line, computed from the parts' printed lines."""
  import targets  # pylint: disable=import-outside-toplevel
  returned = targets.main(['--smoke'])
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith('{')]
  assert printed[-4:] == returned
  by_name = {line['target']: line for line in returned}
  assert list(by_name) == list(targets.GOALS)
  parts = [line for line in printed if 'part' in line]
  trains = [line for line in parts if line['part'] == 'train_benchmark.py']
  assert [line['steps_per_dispatch'] for line in trains] == [1, 1, 2]
  assert by_name['compile_seconds_warm']['value'] == trains[1]['compile_seconds']
  assert by_name['compile_seconds_warm']['compile_seconds_cold'] == trains[0]['compile_seconds']
  assert by_name['labeled_images_per_s']['value'] == max(
      trains[0]['labeled_images_per_s'], trains[2]['labeled_images_per_s'])
  evaluate = by_name['evaluate_vs_score']
  assert evaluate['value'] == pytest.approx(
      evaluate['evaluate_us_per_forward_pass'] / evaluate['score_us_per_forward_pass'])
  (estimate,) = [line for line in parts if line['part'] == 'cycle_benchmark.py'
                 and 'estimated_seconds' in line]
  assert by_name['protocol_minutes']['value'] == pytest.approx(estimate['estimated_seconds'] / 60)
  for line in returned:
    assert isinstance(line['met'], bool) and line['device']['platform'] == jax.default_backend()
