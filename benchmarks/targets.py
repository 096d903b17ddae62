"""The four speed targets of the CIFAR-10 protocol on one GPU, measured by one command:

  python benchmarks/targets.py            # on the GPU: by design under 8 minutes on one H200
  python benchmarks/targets.py --smoke    # tiny sizes, the small CNN, any machine (the tests)

Each part runs the existing benchmark in a fresh process (so compilation is timed as a
run pays it) and its JSON lines are printed as they come, then one line per target:

  labeled_images_per_s  the TOD train step, ResNet-18, 128 labeled + 128 unlabeled, CIFAR
                        shapes, synthetic data (train_benchmark.py; the config's defaults, so
                        compute_dtype 'auto': bfloat16 on a GPU), and the same with
                        steps_per_dispatch=8; goal >= 3 x 5,080 (the H200 figure before);
  evaluate_vs_score     a cycle's evaluation (w_c and its EMA model) against scoring (kept
                        outputs), us per forward pass of one image (score_benchmark.py:
                        16,384 images, chunk 1,024); goal <= 1;
  compile_seconds       the train benchmark's first cycle (compile + one step) with an empty
                        persistent compilation cache, then again with the cache it filled;
                        goal <= 5 s warm;
  protocol_minutes      cycle_benchmark.py --protocol_estimate (50,000 synthetic CIFAR images,
                        2 cycles of 1 epoch, estimate of 7 cycles x 200 epochs); goal <= 15.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOALS = {'labeled_images_per_s': ('>=', 3 * 5080), 'evaluate_vs_score': ('<=', 1.0),
         'compile_seconds_warm': ('<=', 5.0), 'protocol_minutes': ('<=', 15.0)}


def _lines(script: str, args: list, timeout: int) -> list[dict]:
  """The JSON lines of `script args` run in a fresh process (printed as they come)."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH', '')) if p)
  out = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True,
                       text=True, timeout=timeout, check=False, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=path))
  if out.returncode:
    raise RuntimeError(f'{script} {" ".join(args)} failed:\n{out.stderr[-3000:]}')
  lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  for line in lines:
    print(json.dumps({'part': script, **line}), flush=True)
  return lines


def _train(smoke: bool, cache: str, extra: tuple = ()) -> dict:
  args = (['--smoke'] if smoke else ['--batch=128', '--steps=20']) + [
      '--impl=jax', f'--config.compilation_cache_dir={cache}', *extra]
  return next(line for line in _lines('train_benchmark.py', args, 600) if 'seconds' in line)


def _target(name: str, value: float, **detail) -> dict:
  op, goal = GOALS[name]
  met = value >= goal if op == '>=' else value <= goal
  return bench_utils.emit({'target': name, 'value': value, 'goal': f'{op} {goal}', 'met': met,
                           **detail})


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes and the small CNN (for the test suite)')
  args = parser.parse_args(argv)
  smoke = args.smoke
  with tempfile.TemporaryDirectory() as cache:
    cold = _train(smoke, cache)
    warm = _train(smoke, cache)
    scanned = _train(smoke, cache, ('--config.steps_per_dispatch=8',) if not smoke else
                     ('--config.steps_per_dispatch=2',))
  score = _lines('score_benchmark.py', ['--smoke'] if smoke else [
      '--impl=jax', '--pools=16384', '--chunks=1024', '--repeats=3'], 600)
  # Per forward pass, as the cycle benchmark counts: evaluation runs two models per image.
  per_pass = {line['impl']: line['us_per_image'] / line['forward_passes_per_image']
              for line in score if line.get('impl') in ('tod_jax_kept_outputs', 'tod_jax_evaluate')
              and line['pool'] == max(x.get('pool', 0) for x in score)}
  protocol = _lines('cycle_benchmark.py', ['--smoke', '--config=configs/cifar10.py',
                                           '--config.model=small_cnn', '--synthetic_cifar=200',
                                           '--protocol_estimate'] if smoke else [
      '--config=configs/cifar10.py', '--synthetic_cifar=50000', '--config.num_epochs=1',
      '--cycles=2', '--protocol_estimate'], 600)[-1]
  best = max((cold, scanned), key=lambda line: line['labeled_images_per_s'])
  return [
      _target('labeled_images_per_s', best['labeled_images_per_s'],
              steps_per_dispatch=best['steps_per_dispatch'],
              by_steps_per_dispatch={str(line['steps_per_dispatch']): line['labeled_images_per_s']
                                     for line in (cold, scanned)},
              compute_dtype=cold['compute_dtype'], model=cold['model'], batch=cold['batch']),
      _target('evaluate_vs_score', per_pass['tod_jax_evaluate'] / per_pass['tod_jax_kept_outputs'],
              evaluate_us_per_forward_pass=per_pass['tod_jax_evaluate'],
              score_us_per_forward_pass=per_pass['tod_jax_kept_outputs']),
      _target('compile_seconds_warm', warm['compile_seconds'],
              compile_seconds_cold=cold['compile_seconds']),
      _target('protocol_minutes', protocol['estimated_seconds'] / 60,
              estimated_train_seconds=protocol['estimated_train_seconds'],
              estimated_score_seconds=protocol['estimated_score_seconds'],
              estimated_other_seconds=protocol['estimated_other_seconds']),
  ]


if __name__ == '__main__':
  main()
