"""How flat the initial network's softmax is on the digits pool, per param_init (docs/method.md,
"Where tod_jax follows the paper": cycle 1's COD query compares with this network).

  python benchmarks/init_flatness.py [--seeds=0,1,2]

For each scheme and seed: w_0 exactly as a digits run builds it (cycle.initial_variables),
inference mode, the whole pool; `mean_sq_dev_from_uniform` = mean over the pool of
sum_k (p_k - 1/K)^2 and the logits' std. With torch installed, also the PyTorch small CNN
of benchmarks/reference_parity.py (what the authors' functions get) under torch.manual_seed.
One JSON line per (init, seed), then one per init with the means.
"""

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import digits  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import augment, cycle, datasets, initializers, models  # noqa: E402


def flatness(logits: np.ndarray) -> dict:
  """Mean sum_k (p_k - 1/K)^2 of the softmax of `logits` [N, K], and the logits' std."""
  p = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  return {'mean_sq_dev_from_uniform': float(np.mean(np.sum((p - 1 / p.shape[-1]) ** 2, -1))),
          'logit_std': float(np.std(logits))}


def _torch_logits(torch, images: np.ndarray, seed: int) -> np.ndarray:
  import reference_parity  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  net = reference_parity.small_cnn_class(torch)(10, images.shape[-1]).eval()
  with torch.no_grad():
    return net(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2))[0].numpy()


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--seeds', default='0,1,2')
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  config = digits.get_config()
  dataset = datasets.load_dataset(config)
  images = np.asarray(augment.normalize(dataset.train_images, dataset.mean, dataset.std))
  model = models.create_model(config.model, dataset.num_classes)
  records, per_init = [], {}

  def add(init: str, seed: int, logits: np.ndarray) -> None:
    record = {'init': init, 'seed': seed, **flatness(np.asarray(logits))}
    per_init.setdefault(init, []).append(record)
    records.append(bench_utils.emit(record))

  for scheme in initializers.SCHEMES:
    for seed in seeds:
      config.param_init, config.seed = scheme, seed
      variables, _ = cycle.initial_variables(config, model, dataset)
      add(f'tod_jax {scheme}', seed, model.apply(variables, images, train=False))
  try:
    torch = bench_utils.import_torch()
  except ImportError as e:
    records.append(bench_utils.skipped('torch', str(e)))
  else:
    for seed in seeds:
      add('torch nn.Conv2d/nn.Linear defaults', seed, _torch_logits(torch, images, seed))
  for init, rows in per_init.items():
    records.append(bench_utils.emit({
        'init': init, 'seeds': len(rows),
        **{f'mean_{k}': float(np.mean([r[k] for r in rows]))
           for k in ('mean_sq_dev_from_uniform', 'logit_std')}}))
  return records


if __name__ == '__main__':
  main()
