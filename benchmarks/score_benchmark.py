"""COD scoring throughput: kept outputs (1 pass) vs two passes vs a PyTorch two-pass scorer.

Sweeps pool and chunk sizes; prints one JSON line per (implementation, pool, chunk)
and one line per ratio of two printed lines:

  python benchmarks/score_benchmark.py --pools=2048 --chunks=256
  python benchmarks/score_benchmark.py --pools=512,2048 --chunks=128,256,512
  python benchmarks/score_benchmark.py --peak_tflops=67   # adds the FLOP floor (H100 fp32)
  python benchmarks/score_benchmark.py --score_precision=default   # TF32 on a recent GPU
  python benchmarks/score_benchmark.py --smoke   # tiny sizes and the small CNN, for the tests

`tod_jax_evaluate` is a cycle's test-set evaluation (Scorer.accuracies: w_c and its EMA
model in one pass, at the evaluation precision) over the same images, so its
`us_per_image` sits beside scoring's; the ratio line evaluate / kept compares them, and
`tod_jax_evaluate_apart` is the same as two Scorer.accuracy calls (one pass per model).

The steady state of a cycle c >= 2 is measured: the kept outputs of w_{c-1} exist, so
the kept path runs only w_c over the pool. Each implementation is warmed up (compiled)
on one chunk first; `seconds` is the best of --repeats full passes over the pool.
The PyTorch scorer is the straightforward one (DataLoader, two models in eval mode,
softmax, torch.norm), as in the authors' code; it needs `pip install torch==2.13.0`
(the `bench` extra) and is reported as skipped when torch is missing.

`flops` is XLA's count for one inference forward pass per image times the passes
over the pool. With --peak_tflops (the device's peak: H100 SXM about 989 dense bf16,
494 tf32, 67 fp32 without tensor cores) each line adds `flop_floor_seconds` (flops /
peak) and `seconds_over_flop_floor`.
"""

import argparse
import os
import sys

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import devices, driver, kept_outputs, models, precision, scoring  # noqa: E402
from tod_jax.train_state import init_variables  # noqa: E402

KEPT, TWO_PASS = 'tod_jax_kept_outputs', 'tod_jax_two_pass'
EVALUATE = 'tod_jax_evaluate'  # A cycle's test-set evaluation: w_c and its EMA in one pass.
EVALUATE_APART = 'tod_jax_evaluate_apart'  # The same as two Scorer.accuracy calls (before).


def bench_jax(images, pools, chunk, model, repeats, level):
  """Yields (impl, pool, forward passes per image, seconds) for one chunk size, scoring at
  precision `level`."""
  current = init_variables(model, jax.random.PRNGKey(1), images.shape[1:])
  # Any other weights time the same; scaling saves a second compile of the initialiser.
  previous = jax.tree.map(lambda x: 0.9 * x, current)
  scorer = scoring.Scorer(model, bench_utils.CIFAR_MEAN, bench_utils.CIFAR_STD, 'softmax', chunk,
                          score_precision=level)
  all_indices = np.arange(len(images))
  _, previous_kept = kept_outputs.cod_scores(scorer, previous, current, images, all_indices,
                                             None)  # Keeps f(x; prev).
  kept = lambda pool: kept_outputs.cod_scores(scorer, current, previous, images, pool,
                                              previous_kept)[0]
  two_pass = lambda pool: scorer.cod(current, previous, images, pool)
  # The kept path from kept outputs reproduces the two-pass scores (and both are compiled).
  np.testing.assert_allclose(kept(all_indices[:chunk]), two_pass(all_indices[:chunk]),
                             rtol=1e-4, atol=1e-5)
  labels = np.random.default_rng(1).integers(0, 10, len(images))
  evaluate = lambda pool: scorer.accuracies((current, previous), images[:pool], labels[:pool])
  for pool in pools:
    indices = all_indices[:pool]
    yield KEPT, pool, 1, bench_utils.best_of(lambda: kept(indices), repeats)
    yield TWO_PASS, pool, 2, bench_utils.best_of(lambda: two_pass(indices), repeats)
    evaluate(pool)  # Compiles for this pool's chunking (at most one chunk of its own size).
    yield EVALUATE, pool, 2, bench_utils.best_of(lambda: evaluate(pool), repeats)
    apart = lambda pool: [scorer.accuracy(v, images[:pool], labels[:pool])
                          for v in (current, previous)]
    apart(pool)
    yield EVALUATE_APART, pool, 2, bench_utils.best_of(lambda: apart(pool), repeats)


def bench_torch(images, pools, chunk, model_name, repeats):
  """Yields (impl, pool, forward passes per image, seconds) for one chunk size."""
  torch = bench_utils.import_torch()
  from torch.utils.data import DataLoader, TensorDataset  # pylint: disable=import-outside-toplevel
  import torch_resnet  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  net = torch_resnet.MODELS[model_name]
  device = bench_utils.torch_device(torch)
  current = net(10, images.shape[-1]).eval().to(device)
  previous = net(10, images.shape[-1]).eval().to(device)
  mean = torch.tensor(bench_utils.CIFAR_MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(bench_utils.CIFAR_STD, device=device).view(1, 3, 1, 1)
  data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

  def score(pool, limit=None):
    loader = DataLoader(TensorDataset(data[:pool]), batch_size=chunk, shuffle=False)
    scores = []
    with torch.no_grad():
      for i, (x,) in enumerate(loader):
        if limit is not None and i >= limit:
          break
        x = (x.to(device).float() / 255.0 - mean) / std
        p = torch.softmax(current(x), dim=1)
        q = torch.softmax(previous(x), dim=1)
        scores.append(torch.norm(p - q, dim=1))
    return torch.cat(scores).cpu()  # On the host, like the other paths' scores.

  score(chunk, limit=1)
  for pool in pools:
    yield (bench_utils.torch_impl(torch, '_two_pass'), pool, 2,
           bench_utils.best_of(lambda: score(pool), repeats))


def _ints(text):
  return [int(x) for x in text.split(',')]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--pools', '--pool', type=_ints, default=[2048],
                      help='comma-separated pool sizes')
  parser.add_argument('--chunks', '--chunk', type=_ints, default=[256],
                      help='comma-separated chunk (batch) sizes')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--model', default='resnet18', choices=['resnet18', 'small_cnn'])
  parser.add_argument('--impl', default='all', choices=['all', 'jax', 'torch'])
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help="the device's peak TFLOP/s; adds the FLOP floor to each line")
  parser.add_argument('--smoke', action='store_true',
                      help='pools of 16 and 24, chunk 8, the small CNN (for the test suite)')
  parser.add_argument('--num_cpu_devices', type=int, default=-1,
                      help="as the config field: -1 (auto, a run's default), 0 one device, N")
  parser.add_argument('--cpu_convolutions', default='auto', choices=devices.CPU_CONVOLUTIONS,
                      help="as the config field (XLA:CPU's convolution kernels)")
  parser.add_argument('--score_precision', default=precision.DEFAULTS['score'],
                      choices=precision.LEVELS, help='as config.precision.score')
  parser.add_argument('--deterministic', type=int, default=1, choices=[0, 1],
                      help='as config.deterministic (XLA:GPU deterministic kernels)')
  args = parser.parse_args(argv)
  if args.smoke:
    args.pools, args.chunks, args.repeats, args.model = [16, 24], [8], 1, 'small_cnn'
  # The CPU split and kernels a user's run of this model gets (before JAX starts its backend).
  driver.setup_devices(ml_collections.ConfigDict(dict(
      model=args.model, num_cpu_devices=args.num_cpu_devices, batch_size=min(args.chunks),
      unlabeled_batch_size=min(args.chunks), semi=False, distributed=dict(enabled=False),
      cpu_convolutions=args.cpu_convolutions, deterministic=bool(args.deterministic),
      compilation_cache_dir='auto')))
  images = np.random.default_rng(0).integers(0, 256, (max(args.pools), 32, 32, 3),
                                             dtype=np.uint8)
  model = models.create_model(args.model, 10)
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), images.shape[1:]))
  flops_per_image = bench_utils.forward_flops(model, shapes, images.shape[1:])

  lines = []
  for chunk in args.chunks:
    results = []
    if args.impl in ('all', 'jax'):
      results += list(bench_jax(images, args.pools, chunk, model, args.repeats,
                                args.score_precision))
    if args.impl in ('all', 'torch'):
      try:
        results += list(bench_torch(images, args.pools, chunk, args.model, args.repeats))
      except ImportError as e:
        lines.append(bench_utils.skipped('torch_two_pass', str(e)))
    by_key = {}
    for impl, pool, passes, seconds in results:
      by_key[impl, pool] = bench_utils.emit({
          'impl': impl, 'model': args.model, 'pool': pool, 'chunk': chunk,
          'score_precision': args.score_precision if impl.startswith('tod_jax') else None,
          'deterministic': bool(args.deterministic),
          'forward_passes_per_image': passes, 'seconds': seconds,
          'images_per_s': pool / seconds, 'us_per_image': 1e6 * seconds / pool,
          **bench_utils.flop_floor(passes * pool * flops_per_image, seconds, args.peak_tflops)})
      lines.append(by_key[impl, pool])
    torch_impl = next((impl for impl, _ in by_key if impl.startswith('torch')), None)
    for pool in args.pools:
      pairs = [(KEPT, TWO_PASS), (KEPT, torch_impl), (TWO_PASS, torch_impl), (EVALUATE, KEPT),
               (EVALUATE, EVALUATE_APART)]
      for num, den in pairs:
        if (num, pool) in by_key and (den, pool) in by_key:
          lines.append(bench_utils.emit({
              'pool': pool, 'chunk': chunk,
              **bench_utils.ratio(by_key[num, pool], by_key[den, pool], 'images_per_s')}))
  return lines


if __name__ == '__main__':
  main()
