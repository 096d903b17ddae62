"""Where the ResNet-18 train step lost to PyTorch on a CPU: its 3x3 convolutions, op by op.

For each stage shape of the CIFAR ResNet-18 (32x32x64, 16x16x128, 8x8x256, 4x4x512; stride 1,
SAME padding, batch 256 = 128 labeled + 128 unlabeled), times three ops on their own:
`forward` (the convolution), `input_grad` (its VJP with respect to the input) and
`filter_grad` (with respect to the kernel), each as one jitted call (jax.vjp's backward
function, the forward excluded), for XLA's own convolution (`tod_jax_xla`), for the one
tod_jax's models use (`tod_jax`: tod_jax.conv, XLA's forward and input gradient, the filter
gradient as blocked matmuls on CPU where it applies) and for PyTorch
(torch.nn.functional.conv2d, torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight).
XLA:CPU's kernels are those of `--cpu_convolutions` (as config.cpu_convolutions sets them for
a ResNet-18 run: 'eigen' by default, 'xla_default' for YNNPACK's in jaxlib 0.10), recorded in
each line.
Prints one JSON line per (impl, shape, op) with the best-of-`--repeats` seconds, then each
tod_jax implementation / PyTorch speed ratio (> 1: tod_jax faster). Runs on jax's default
device (no CPU split: one op, one device).

  python benchmarks/conv_benchmark.py
  python benchmarks/conv_benchmark.py --cpu_convolutions=xla_default
  python benchmarks/conv_benchmark.py --smoke     # batch 4, two small shapes (tests)
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import jaxlib.version
import ml_collections

from tod_jax import conv, devices

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top

SHAPES = ((32, 64), (16, 128), (8, 256), (4, 512))  # (height = width, channels) per stage.
OPS = ('forward', 'input_grad', 'filter_grad')


JAX_IMPLS = {'tod_jax_xla': jax.lax.conv_general_dilated, 'tod_jax': conv.conv_general_dilated}


def bench_jax(conv_fn, batch: int, size: int, channels: int, repeats: int) -> dict:
  """Seconds per op of `conv_fn` (a conv_general_dilated): forward, input_grad, filter_grad."""
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, channels))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, channels, channels)) * 0.05
  _conv = lambda x, w: conv_fn(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, backward = jax.vjp(_conv, x, w)
  dy = jnp.ones_like(y)
  fns = {'forward': jax.jit(_conv),
         'input_grad': jax.jit(lambda dy: backward(dy)[0]),
         'filter_grad': jax.jit(lambda dy: backward(dy)[1])}
  args = {'forward': (x, w), 'input_grad': (dy,), 'filter_grad': (dy,)}
  seconds = {}
  for op in OPS:
    jax.block_until_ready(fns[op](*args[op]))  # Compile.
    seconds[op] = bench_utils.best_of(
        lambda op=op: jax.block_until_ready(fns[op](*args[op])), repeats)
  return seconds


def bench_torch(torch, batch: int, size: int, channels: int, repeats: int) -> dict:
  x = torch.randn(batch, channels, size, size)
  w = torch.randn(channels, channels, 3, 3) * 0.05
  dy = torch.ones(batch, channels, size, size)
  f = torch.nn.functional
  fns = {'forward': lambda: f.conv2d(x, w, padding=1),
         'input_grad': lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1),
         'filter_grad': lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1)}
  seconds = {}
  with torch.no_grad():
    for op in OPS:
      fns[op]()  # Warm up.
      seconds[op] = bench_utils.best_of(fns[op], repeats)
  return seconds


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--smoke', action='store_true', help='batch 4, shapes 32x32x16 and 4x4x16')
  parser.add_argument('--cpu_convolutions', default='eigen', choices=devices.CPU_CONVOLUTIONS)
  args = parser.parse_args(argv)
  run_config = ml_collections.ConfigDict({'cpu_convolutions': args.cpu_convolutions,
                                          'deterministic': True})  # As a run's default.
  flags = devices.xla_flags(run_config, os.environ.get('XLA_FLAGS', ''),
                            jaxlib.version.__version__, large_model=True)  # ResNet-18's convs.
  os.environ['XLA_FLAGS'] = flags  # Before JAX starts its backends (no effect once started).
  shapes = ((32, 16), (4, 16)) if args.smoke else SHAPES
  batch, repeats = (4, 1) if args.smoke else (args.batch, args.repeats)
  try:
    torch = bench_utils.import_torch()
  except ImportError as e:
    torch = None
    skipped = bench_utils.skipped('torch', str(e))
  lines = [] if torch is not None else [skipped]
  for size, channels in shapes:
    impls = [(name, bench_jax(fn, batch, size, channels, repeats))
             for name, fn in JAX_IMPLS.items()]
    if torch is not None:
      impls.append((bench_utils.torch_impl(torch), bench_torch(torch, batch, size, channels,
                                                               repeats)))
    by_impl = {}
    for impl, seconds in impls:
      for op in OPS:
        by_impl[impl, op] = bench_utils.emit({
            'impl': impl, 'op': op, 'batch': batch, 'size': size, 'channels': channels,
            'cpu_convolutions': args.cpu_convolutions,
            'seconds': seconds[op], 'inverse_seconds': 1.0 / seconds[op]})
        lines.append(by_impl[impl, op])
    if torch is not None:
      for name in JAX_IMPLS:
        for op in OPS:
          ratio = bench_utils.ratio(by_impl[name, op], by_impl[impls[-1][0], op],
                                    'inverse_seconds')
          lines.append(bench_utils.emit({**ratio, 'op': op, 'size': size, 'channels': channels}))
  return lines


if __name__ == '__main__':
  main()
