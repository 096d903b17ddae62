"""COD scoring throughput: kept outputs (1 pass) vs two passes vs a PyTorch two-pass scorer.

Prints one JSON line per implementation and a final line with the ratios:

  python benchmarks/score_benchmark.py --pool=2048 --chunk=256
  python benchmarks/score_benchmark.py --smoke   # tiny sizes, for the test suite

The steady state of a cycle c >= 2 is measured: the kept outputs of w_{c-1} exist, so
the kept path runs only w_c over the pool. Each implementation is warmed up (compiled)
on one chunk first; `seconds` is the best of --repeats full passes over the pool.
The PyTorch scorer is the straightforward one (DataLoader, two models in eval mode,
softmax, torch.norm), as in the authors' code; it needs `pip install torch==2.13.0`
(the `bench` extra) and is skipped with a note when torch is missing.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tod_jax import kept_outputs, models, scoring  # noqa: E402
from tod_jax.train_state import init_variables  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _best_of(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def bench_jax(images, args):
  model = models.create_model(args.model, 10)
  current = init_variables(model, jax.random.PRNGKey(1), images.shape[1:])
  previous = init_variables(model, jax.random.PRNGKey(0), images.shape[1:])
  scorer = scoring.Scorer(model, MEAN, STD, 'softmax', args.chunk)
  pool = np.arange(len(images))
  state = {}
  kept_outputs.cod_scores(scorer, previous, current, images, pool, state)  # Keeps f(x; prev).
  kept_state = lambda: {kept_outputs.KEPT: dict(state[kept_outputs.KEPT])}
  warm = pool[:scorer._outputs.chunk_size]
  scorer.cod(current, previous, images, warm)
  kept_outputs.cod_scores(scorer, current, previous, images, warm, kept_state())
  # The kept path from kept outputs reproduces the two-pass scores.
  np.testing.assert_allclose(
      kept_outputs.cod_scores(scorer, current, previous, images, pool, kept_state()),
      scorer.cod(current, previous, images, pool), rtol=1e-4, atol=1e-5)
  yield 'tod_jax_kept_outputs', 1, _best_of(
      lambda: kept_outputs.cod_scores(scorer, current, previous, images, pool, kept_state()),
      args.repeats)
  yield 'tod_jax_two_pass', 2, _best_of(
      lambda: scorer.cod(current, previous, images, pool), args.repeats)


def bench_torch(images, args):
  import torch  # pylint: disable=import-outside-toplevel
  from torch.utils.data import DataLoader, TensorDataset  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from torch_resnet import ResNet18  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  current, previous = ResNet18().eval(), ResNet18().eval()
  mean = torch.tensor(MEAN).view(1, 3, 1, 1)
  std = torch.tensor(STD).view(1, 3, 1, 1)
  data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  loader = DataLoader(TensorDataset(data), batch_size=args.chunk, shuffle=False)

  def score(limit=None):
    scores = []
    with torch.no_grad():
      for i, (x,) in enumerate(loader):
        if limit is not None and i >= limit:
          break
        x = (x.float() / 255.0 - mean) / std
        p = torch.softmax(current(x), dim=1)
        q = torch.softmax(previous(x), dim=1)
        scores.append(torch.norm(p - q, dim=1))
    return torch.cat(scores)

  score(limit=1)
  yield f'torch_{torch.__version__}_two_pass', 2, _best_of(score, args.repeats)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pool', type=int, default=2048)
  parser.add_argument('--chunk', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--model', default='resnet18')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny pool and the small CNN, JAX paths only (for the test suite)')
  args = parser.parse_args(argv)
  if args.smoke:
    args.pool, args.chunk, args.repeats, args.model = 24, 8, 1, 'small_cnn'
  images = np.random.default_rng(0).integers(0, 256, (args.pool, 32, 32, 3), dtype=np.uint8)
  machine = {'device': str(jax.devices()[0].device_kind), 'jax_devices': jax.device_count(),
             'cpu_count': os.cpu_count(), 'processor': platform.processor() or platform.machine()}
  results = list(bench_jax(images, args))
  if args.model != 'resnet18':
    print(json.dumps({'impl': 'torch_two_pass', 'skipped': 'the PyTorch baseline is ResNet-18'}))
  else:
    try:
      results += list(bench_torch(images, args))
    except ImportError as e:
      print(json.dumps({'impl': 'torch_two_pass', 'skipped': f'{e}; pip install torch==2.13.0'}))
  rates = {}
  for impl, passes, seconds in results:
    rates[impl] = args.pool / seconds
    print(json.dumps({'impl': impl, 'model': args.model, 'pool': args.pool, 'chunk': args.chunk,
                      'forward_passes_per_image': passes, 'seconds': round(seconds, 4),
                      'images_per_s': round(rates[impl], 2), **machine}))
  torch_impl = next((k for k in rates if k.startswith('torch')), None)
  ratios = {'kept_vs_two_pass': rates['tod_jax_kept_outputs'] / rates['tod_jax_two_pass']}
  if torch_impl:
    ratios['kept_vs_torch_two_pass'] = rates['tod_jax_kept_outputs'] / rates[torch_impl]
    ratios['two_pass_vs_torch_two_pass'] = rates['tod_jax_two_pass'] / rates[torch_impl]
  print(json.dumps({'ratios': {k: round(v, 3) for k, v in ratios.items()}}))
  return rates


if __name__ == '__main__':
  main()
