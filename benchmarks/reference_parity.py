"""Parity with the authors' code: tod_jax's loop vs the reference's own functions, on digits.

Runs, on the same digits split, seeds and protocol (10% start, +5% per cycle, every
cycle queries, config.num_epochs per cycle), (a) tod_jax's own loop,
`tod_jax.driver.run`, and (b) the authors' PyTorch `train_epoch`, `test` and
`get_uncertainty` from siyuhuang/TOD's `main_TOD.py`, unchanged, in a cycle loop
written here after that script's `__main__`, and compares them:

  python benchmarks/reference_parity.py --reference_dir=/tmp/TOD             # 5 seeds x 2
  python benchmarks/reference_parity.py --reference_dir=/tmp/TOD --seeds=0   # a few minutes
  python benchmarks/reference_parity.py --reference_dir=/tmp/TOD --seeds=0 --num_cycles=2 \\
      --num_epochs=1                                                          # smoke (tests)
  python benchmarks/reference_parity.py --implementations=tod_jax            # no torch needed
  python benchmarks/reference_parity.py --reference_dir=/tmp/TOD --ablation  # Table I: loss on/off
  python benchmarks/reference_parity.py --summarize=a.jsonl,b.jsonl  # summaries of --out files
  python benchmarks/reference_parity.py --reference_dir=/tmp/TOD --config=configs/cifar10.py \
      --synthetic_cifar=1000 --seeds=0 --strategies=cod --num_epochs=1 --torch_threads=0
      # ResNet-18: the CIFAR-10 protocol's shape on 1,000 random CIFAR-shaped images

Get a checkout with `git clone https://github.com/siyuhuang/TOD /tmp/TOD` (or, from a
bare mirror, `git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/TOD`); --reference_dir
defaults to $TOD_REFERENCE_DIR. Nothing of it is copied here: it is imported.

Output, one JSON line each (bench_utils.emit adds device and host), every run line with
`semi` (the TOD loss on or off): per (impl, strategy, seed, cycle) `num_labeled`,
`test_accuracy` (percent), `train_seconds`, `score_seconds`; per run `wall_seconds`; then
summaries, each per `semi`: per impl and strategy the mean and sample std of the test
accuracy per cycle over seeds; per impl the COD - random gap (mean over seeds of the mean
accuracy over cycles 2..num_cycles); the ratio of tod_jax's gap to the reference's; the mean
wall seconds per run per impl and their ratio (reference / tod_jax: tod_jax's speed-up).
--ablation runs every (impl, strategy, seed) with the loss on and off (Table I's rows on both
sides) and adds, per impl and strategy, `tod_loss_effect`: on - off per cycle (mean over
seeds, paired), the number of cycles where it is >= 0, and its mean over cycles 2.. with a
standard error. --summarize=FILES runs nothing and prints only the summaries of the run lines
in those --out files (seeds split over processes run in parallel). Without torch or without
main_TOD.py in --reference_dir (and the reference requested) it prints one line with
`skipped` and exits 0; the checkout is checked first.

How the reference is run (in this process only):
- torchvision cannot be installed beside torch 2.13.0 (CPU) here, and the functions under
  test do not use it: where it is missing, stub modules `torchvision`,
  `torchvision.transforms`, `.models`, `.datasets` (dummy CIFAR10, CIFAR100, SVHN,
  ImageFolder) go into sys.modules before `import main_TOD` (its `__main__` body does not run).
- Without CUDA, `torch.Tensor.cuda` and `torch.nn.Module.cuda` are monkeypatched to no-ops.
- torch runs one intra-op thread (--torch_threads=1; 0 keeps torch's default): the network
  is tiny, and on this 2-core machine shared with other processes two threads made each
  train step 10-60x slower (about 0.4-1 s instead of 10 ms; OpenMP threads waiting on
  descheduled peers), which turned a 7-cycle reference run into 35 minutes.
- Module globals it reads: AUXILIARY 'TOD' (config.semi; else 'NONE'), SAMPLING 'TOD' for
  cod and 'RANDOM' for random, WEIGHT = config.tod_weight, DATASET 'digits', iters = 0 at
  the start of each run.
- Network: for config.model 'small_cnn', tod_jax's SmallCNN (conv 3x3 no bias 'same'
  32/64/128, each BatchNorm (torch momentum 0.1 = flax 0.9, eps 1e-5) and ReLU, 2x2
  max-pool after the first, global average pool) with the reference ResNet's two linear
  heads (main, consistency); forward returns (scores, cons_scores, features, features_list)
  as its functions expect. Initialisation is torch's default, not flax's. For 'resnet18',
  the checkout's own `models.resnet.ResNet18` (the network of the paper's CIFAR runs).
- Data: digits, or with --synthetic_cifar=N random uint8 32x32x3 images with random labels
  (N pool, N // 5 test; bench_utils.synthetic_cifar): a speed comparison, its accuracies
  are chance.
- As its `__main__`: models {'backbone', 'ema', 'cod'}, the last two separately initialised
  with detached parameters; the backbone continues across cycles; per cycle a fresh SGD
  (config.learning_rate, momentum, weight decay) and MultiStepLR x lr_decay_factor at
  int(lr_decay_at * epochs); from cycle 2 'cod' holds the previous cycle's backbone. COD
  scores every unlabeled sample (no subset on digits) and takes the lowest `budget` scores
  in cycle 1, the highest later; random takes a seeded random choice. Loaders: labeled
  (SubsetRandomSampler, batch_size), 'extra' (SubsetRandomSampler over the unlabeled set,
  train transform; the reference's cycle 1 uses a sequential sampler there, i.e. the same
  unlabeled batch every step), test, and a sequential scoring loader (test transform).
- Transforms: training images random-crop back to size from a copy zero-padded by
  config.crop_padding (flip if config.flip), then (x/255 - mean)/std with tod_jax's digits
  mean/std; test and scoring images are only normalised.

tod_jax runs with the digits config as is (override with --config.<field>=...; the devices
and kernels are those a run of that config gets, driver.setup_devices): its
defaults follow the reference (cod_first_cycle='lowest', against the network's own initial
weights rather than a separately initialised one; tod_loss_form='reference'). Its --workdir
subdirectories must be new: an existing run there would be resumed, not timed.
"""

import copy
import importlib
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import types
import warnings
from typing import Any, Optional

import numpy as np
from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import datasets, driver  # noqa: E402
from tod_jax import cycle as cycle_lib  # noqa: E402
from tod_jax.dataset import Dataset

IMPLS, STRATEGIES = ('tod_jax', 'reference'), ('cod', 'random')
SAMPLING = {'cod': 'TOD', 'random': 'RANDOM'}


def parse_flags(argv: Optional[list[str]]) -> tuple[flags.FlagValues, Any]:
  """Fresh FlagValues (--config is configs/digits.py) and the config with the overrides."""
  fv = bench_utils.config_flag_values('digits.py')
  flags.DEFINE_string('reference_dir', os.environ.get('TOD_REFERENCE_DIR', ''),
                      'Checkout of siyuhuang/TOD (holds main_TOD.py, models/, utils/).',
                      flag_values=fv)
  flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds.', flag_values=fv)
  flags.DEFINE_list('strategies', list(STRATEGIES), 'Subset of cod,random.', flag_values=fv)
  flags.DEFINE_list('implementations', list(IMPLS), 'Subset of tod_jax,reference.',
                    flag_values=fv)
  flags.DEFINE_integer('num_epochs', 0, 'Epochs per cycle, both sides (0: config).',
                       flag_values=fv)
  flags.DEFINE_integer('num_cycles', 0, 'Cycles, both sides (0: config).', flag_values=fv)
  flags.DEFINE_integer('synthetic_cifar', 0, 'Random CIFAR-shaped pool of this size instead '
                       'of digits (test: a fifth as many).', flag_values=fv)
  flags.DEFINE_string('workdir', '', 'tod_jax run directories (default: a temporary one).',
                      flag_values=fv)
  flags.DEFINE_string('out', '', 'Also write the JSON lines to this file.', flag_values=fv)
  flags.DEFINE_bool('ablation', False, "Table I's rows: each run with the TOD loss on and off "
                    '(config.semi), paired by seed.', flag_values=fv)
  flags.DEFINE_list('summarize', [], 'Run nothing: print the summaries of the run lines in '
                    'these --out files.', flag_values=fv)
  flags.DEFINE_integer('torch_threads', 1, 'torch.set_num_threads for the reference (0: '
                       "torch's default, one per core).", flag_values=fv)
  config = bench_utils.parse_run_config(fv, 'reference_parity', argv)
  config.num_epochs = fv.num_epochs or config.num_epochs
  config.num_cycles = fv.num_cycles or config.num_cycles
  for name, values, allowed in (('strategies', fv.strategies, STRATEGIES),
                                ('implementations', fv.implementations, IMPLS)):
    if not values or set(values) - set(allowed):
      raise ValueError(f'--{name}={",".join(values)}: choose from {",".join(allowed)}.')
  data = 'synthetic' if fv.synthetic_cifar else config.dataset
  if data not in ('digits', 'synthetic') or config.model not in (
      'small_cnn', 'resnet18') or config.optimizer != 'sgd':
    raise ValueError('The reference side is written for digits or --synthetic_cifar, small_cnn '
                     'or resnet18, and SGD.')
  return fv, config


def reference_missing(reference_dir: str) -> Optional[str]:
  """Why the reference cannot run (no checkout, no torch), or None; imports nothing."""
  if not reference_dir or not os.path.isfile(os.path.join(reference_dir, 'main_TOD.py')):
    return (f'no main_TOD.py in --reference_dir={reference_dir!r}: get the authors\' code with '
            '`git clone https://github.com/siyuhuang/TOD DIR` and pass --reference_dir=DIR '
            '(or set TOD_REFERENCE_DIR)')
  if importlib.util.find_spec('torch') is None:
    return f'torch is not installed: pip install {bench_utils.TORCH_VERSION} (the bench extra)'
  return None


def run_tod_jax(config: Any, strategy: str, seed: int, workdir: str,
                dataset: Optional[Dataset] = None) -> tuple[list[dict], float]:
  """(per-cycle records, wall seconds) of tod_jax.driver.run in a new `workdir` (on `dataset`,
  else config.dataset)."""
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f'{workdir} is not empty: a run there would be resumed, not timed.')
  config = copy.deepcopy(config)
  config.strategy, config.seed = strategy, seed
  start = time.perf_counter()
  records = driver.run(config, workdir, dataset)
  wall = time.perf_counter() - start
  return [{'cycle': r['cycle'], 'num_labeled': r['num_labeled'],
           'test_accuracy': 100.0 * r['test_accuracy'], 'train_seconds': r['train_seconds'],
           'score_seconds': r['score_seconds']} for r in records], wall


def import_reference(reference_dir: str):
  """(main_TOD module, torch): torchvision stubbed where missing, .cuda() a no-op without CUDA."""
  torch = bench_utils.import_torch()
  if importlib.util.find_spec('torchvision') is None:
    root = types.ModuleType('torchvision')
    for name in ('transforms', 'models', 'datasets'):
      module = types.ModuleType(f'torchvision.{name}')
      setattr(root, name, module)
      sys.modules[module.__name__] = module
    for name in ('CIFAR100', 'CIFAR10', 'SVHN', 'ImageFolder'):
      setattr(root.datasets, name, type(name, (), {}))
    sys.modules['torchvision'] = root
  if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  # update_ema_variables uses the deprecated add_(Number, Tensor) overload.
  warnings.filterwarnings('ignore', message='This overload of add_ is deprecated')
  sys.path.insert(0, os.path.abspath(reference_dir))
  return importlib.import_module('main_TOD'), torch


def small_cnn_class(torch):
  """tod_jax's SmallCNN in PyTorch with the reference ResNet's two heads."""
  nn = torch.nn

  class SmallCNN(nn.Module):
    """conv-BN-ReLU x3 (32, 64, 128), max-pool after the first, global pool, two heads."""

    def __init__(self, num_classes: int, channels: int, widths=(32, 64, 128)):
      super().__init__()
      ins = (channels,) + tuple(widths[:-1])
      self.stages = nn.ModuleList(
          nn.Sequential(nn.Conv2d(i, w, 3, padding=1, bias=False),
                        nn.BatchNorm2d(w, eps=1e-5, momentum=0.1), nn.ReLU())
          for i, w in zip(ins, widths))
      self.pool = nn.MaxPool2d(2)
      self.linear = nn.Linear(widths[-1], num_classes)
      self.linear1 = nn.Linear(widths[-1], num_classes)  # The consistency head.

    def forward(self, x):
      features_list = []
      for i, stage in enumerate(self.stages):
        x = stage(x)
        features_list.append(x)
        if i == 0:
          x = self.pool(x)
      features = x.mean(dim=(2, 3))
      return self.linear(features), self.linear1(features), features, features_list

  return SmallCNN


def digits_dataset_class(torch):
  """A torch Dataset over uint8 [N, H, W, C] images: (normalised [C, H, W], label)."""

  class Digits(torch.utils.data.Dataset):
    """Training: random crop from a zero-padded copy (and flip), then normalisation."""

    def __init__(self, images, labels, mean, std, padding: int = 0, flip: bool = False):
      self.images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
      self.labels = [int(y) for y in labels]
      self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
      self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
      self.padding, self.flip = padding, flip

    def __len__(self):
      return len(self.labels)

    def __getitem__(self, index):
      x = self.images[index]
      if self.padding:
        p, (_, h, w) = self.padding, x.shape
        x = torch.nn.functional.pad(x, (p, p, p, p))  # Zeros: black before normalisation.
        top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = x[:, top:top + h, left:left + w]
      if self.flip and torch.rand(()) < 0.5:
        x = x.flip(-1)
      return (x - self.mean) / self.std, self.labels[index]

  return Digits


def reference_data(torch, config: Any, dataset: Dataset) -> dict:
  """{'train', 'unlabeled', 'test'} Datasets: train transform, test transform on the pool, test."""
  digits = digits_dataset_class(torch)
  pool = (dataset.train_images, dataset.train_labels, dataset.mean, dataset.std)
  return {'train': digits(*pool, config.crop_padding, config.flip),
          'unlabeled': digits(*pool),
          'test': digits(dataset.test_images, dataset.test_labels, dataset.mean, dataset.std)}


def reference_loaders(torch, data: dict, labeled, unlabeled, config: Any) -> dict:
  """The loaders train_epoch and test read, as the reference's main builds them per cycle."""
  loader, sampler = torch.utils.data.DataLoader, torch.utils.data.SubsetRandomSampler
  pin = torch.cuda.is_available()
  return {'train': loader(data['train'], batch_size=config.batch_size, pin_memory=pin,
                          sampler=sampler([int(i) for i in labeled])),
          'extra': loader(data['train'], batch_size=config.unlabeled_batch_size,
                          pin_memory=pin, sampler=sampler([int(i) for i in unlabeled])),
          'test': loader(data['test'], batch_size=config.batch_size)}


def reference_models(torch, model: str, num_classes: int, channels: int) -> dict:
  """backbone, then cod and ema: separately initialised, parameters detached (as main)."""
  if model == 'resnet18':  # parse_flags allows resnet18 and small_cnn.
    resnet = importlib.import_module('models.resnet').ResNet18  # The checkout's own network.
    net = lambda num_classes, channels: resnet(num_classes=num_classes)
  else:
    net = small_cnn_class(torch)
  models = {'backbone': net(num_classes, channels).cuda(),
            'cod': net(num_classes, channels).cuda(), 'ema': net(num_classes, channels).cuda()}
  for name in ('cod', 'ema'):
    for param in models[name].parameters():
      param.detach_()
  return models


def reference_query(ref, torch, config: Any, models: dict, data: dict, unlabeled: np.ndarray,
                    budget: int, cycle: int, strategy: str, seed: int) -> np.ndarray:
  """The queried pool indices: COD through get_uncertainty, or a seeded random choice."""
  if strategy == 'random':
    return np.random.default_rng([seed, cycle, 1]).choice(unlabeled, budget, replace=False)
  loader = torch.utils.data.DataLoader(
      data['unlabeled'], batch_size=config.batch_size,
      sampler=ref.SubsetSequentialSampler([int(i) for i in unlabeled]))
  order = np.argsort(ref.get_uncertainty(models, loader).numpy())
  return unlabeled[order[:budget]] if cycle == 1 else unlabeled[order[-budget:]]


def reference_cycle(ref, torch, config: Any, data: dict, models: dict, labeled: np.ndarray,
                    cycle: int, budget: int, strategy: str, seed: int) -> tuple[dict, np.ndarray]:
  """Trains, tests and queries one cycle with the reference's functions; (record, queried)."""
  unlabeled = np.setdiff1d(np.arange(len(data['unlabeled'])), labeled)
  loaders = reference_loaders(torch, data, labeled, unlabeled, config)
  if cycle > 1:  # The state saved at the end of the previous cycle.
    models['cod'].load_state_dict(models['backbone'].state_dict())
  criterion = torch.nn.CrossEntropyLoss(reduction='none')
  optimizer = torch.optim.SGD(models['backbone'].parameters(), lr=config.learning_rate,
                              momentum=config.momentum, weight_decay=config.weight_decay)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(
      optimizer, milestones=[int(config.lr_decay_at * config.num_epochs)],
      gamma=config.lr_decay_factor)
  start = time.perf_counter()
  for epoch in range(config.num_epochs):
    ref.train_epoch(models, criterion, {'backbone': optimizer}, loaders, epoch, 0)
    scheduler.step()
  train_seconds = time.perf_counter() - start
  accuracy = ref.test(models, loaders, 'test')
  start = time.perf_counter()
  queried = reference_query(ref, torch, config, models, data, unlabeled, budget, cycle,
                            strategy, seed)
  score_seconds = time.perf_counter() - start
  return {'cycle': cycle, 'num_labeled': int(len(labeled)), 'test_accuracy': float(accuracy),
          'train_seconds': train_seconds, 'score_seconds': score_seconds}, queried


def run_reference(ref, torch, config: Any, data: dict, strategy: str, seed: int
                  ) -> tuple[list[dict], float]:
  """(per-cycle records, wall seconds) of one run of the reference's functions."""
  start = time.perf_counter()
  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)
  ref.AUXILIARY, ref.SAMPLING = ('TOD' if config.semi else 'NONE'), SAMPLING[strategy]
  ref.WEIGHT, ref.DATASET, ref.iters = config.tod_weight, 'digits', 0
  pool = len(data['unlabeled'])
  initial, budget = cycle_lib.plan_sizes(config, pool)
  labeled = np.sort(np.random.default_rng(seed).choice(pool, initial, replace=False))
  channels = data['unlabeled'].images.shape[1]
  models = reference_models(torch, config.model, len(set(data['test'].labels)), channels)
  records = []
  for cycle in range(1, config.num_cycles + 1):
    record, queried = reference_cycle(ref, torch, config, data, models, labeled, cycle, budget,
                                      strategy, seed)
    records.append(record)
    labeled = np.union1d(labeled, queried).astype(np.int64)
  return records, time.perf_counter() - start


def _mean_std(values: list[float]) -> tuple[float, Optional[float]]:
  """Mean and sample standard deviation (None for one value)."""
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def accuracy_summaries(cycles: list[dict]) -> list[dict]:
  """Per (impl, strategy, semi): mean and sample std of the test accuracy per cycle over seeds."""
  out = []
  for impl, strategy, semi in sorted({(c['impl'], c['strategy'], c['semi']) for c in cycles}):
    mine = [c for c in cycles if (c['impl'], c['strategy'], c['semi']) == (impl, strategy, semi)]
    numbers = sorted({c['cycle'] for c in mine})
    stats = [_mean_std([c['test_accuracy'] for c in mine if c['cycle'] == n]) for n in numbers]
    out.append({'summary': 'test_accuracy_per_cycle', 'impl': impl, 'strategy': strategy,
                'semi': semi, 'cycles': numbers, 'num_seeds': len({c['seed'] for c in mine}),
                'num_labeled': [next(c['num_labeled'] for c in mine if c['cycle'] == n)
                                for n in numbers],
                'mean_test_accuracy': [m for m, _ in stats],
                'std_test_accuracy': [s for _, s in stats]})
  return out


def _late_mean(cycles: list[dict], impl: str, seed: int, strategy: str,
               semi: bool) -> Optional[float]:
  """Mean test accuracy over cycles 2.. of one run (None if it has none)."""
  accuracies = [c['test_accuracy'] for c in cycles if c['cycle'] >= 2 and
                (c['impl'], c['seed'], c['strategy'], c['semi']) == (impl, seed, strategy, semi)]
  return float(np.mean(accuracies)) if accuracies else None


def gap_summaries(cycles: list[dict]) -> list[dict]:
  """Per (impl, semi): mean over seeds of (COD - random) mean accuracy over cycles 2..; per
  semi the ratio tod_jax / reference."""
  out = []
  for semi in sorted({c['semi'] for c in cycles}, reverse=True):
    by_impl = {}
    for impl in sorted({c['impl'] for c in cycles}):
      per_seed = {}
      for seed in sorted({c['seed'] for c in cycles}):
        cod, rand = (_late_mean(cycles, impl, seed, s, semi) for s in STRATEGIES)
        if cod is not None and rand is not None:
          per_seed[seed] = cod - rand
      if per_seed:
        by_impl[impl] = {'summary': 'cod_minus_random', 'impl': impl, 'semi': semi,
                         'from_cycle': 2, 'seeds': list(per_seed),
                         'per_seed_gap': list(per_seed.values()),
                         'gap': float(np.mean(list(per_seed.values())))}
    out += by_impl.values()
    if set(by_impl) == set(IMPLS) and by_impl['reference']['gap'] != 0:
      out.append({'summary': 'gap_ratio', 'semi': semi,
                  **bench_utils.ratio(by_impl['tod_jax'], by_impl['reference'], 'gap')})
  return out


def tod_loss_summaries(cycles: list[dict]) -> list[dict]:
  """Per (impl, strategy) run both ways: the TOD loss's effect, on - off, paired by seed."""
  out = []
  for impl, strategy in sorted({(c['impl'], c['strategy']) for c in cycles}):
    acc = {(c['semi'], c['seed'], c['cycle']): c['test_accuracy'] for c in cycles
           if (c['impl'], c['strategy']) == (impl, strategy)}
    numbers = sorted({n for _, _, n in acc})
    seeds = sorted(s for s in {s for _, s, _ in acc}
                   if all((on, s, n) in acc for on in (True, False) for n in numbers))
    if not seeds:
      continue
    diff = np.array([[acc[True, s, n] - acc[False, s, n] for n in numbers] for s in seeds])
    per_cycle = diff.mean(axis=0)
    late = diff[:, 1:].mean(axis=1) if len(numbers) > 1 else diff[:, 0]
    out.append({'summary': 'tod_loss_effect', 'impl': impl, 'strategy': strategy,
                'seeds': seeds, 'cycles': numbers,
                'mean_on_minus_off': per_cycle.tolist(),
                'cycles_at_least_equal': int(np.sum(per_cycle >= -1e-9)),  # Ties: equal counts.
                'late_mean_on_minus_off': float(late.mean()),
                'late_standard_error': (float(late.std(ddof=1) / np.sqrt(len(seeds)))
                                        if len(seeds) > 1 else None)})
  return out


def wall_summaries(runs: list[dict]) -> list[dict]:
  """Per (impl, semi) the mean wall seconds per run; per semi reference / tod_jax (tod_jax's
  speed-up)."""
  out = []
  for semi in sorted({r['semi'] for r in runs}, reverse=True):
    by_impl = {impl: {'summary': 'wall', 'impl': impl, 'semi': semi, 'num_runs': len(mine),
                      'num_cycles': mine[0]['num_cycles'], 'num_epochs': mine[0]['num_epochs'],
                      'mean_wall_seconds': float(np.mean([r['wall_seconds'] for r in mine]))}
               for impl in IMPLS
               if (mine := [r for r in runs if (r['impl'], r['semi']) == (impl, semi)])}
    out += by_impl.values()
    if len(by_impl) == 2:
      out.append({'summary': 'speed_ratio', 'semi': semi, **bench_utils.ratio(
          by_impl['reference'], by_impl['tod_jax'], 'mean_wall_seconds')})
  return out


def read_run_lines(paths: list[str]) -> list[dict]:
  """The per-cycle and per-run lines of earlier --out files (their summaries left out)."""
  records = []
  for path in paths:
    with open(path) as f:
      mine = [r for r in map(json.loads, f) if 'summary' not in r and 'skipped' not in r]
    if any('semi' not in r for r in mine):
      raise ValueError(f'{path} has run lines without `semi` (written before --ablation '
                       'existed): run those seeds again to summarize them.')
    records += mine
  return records


def main(argv: Optional[list[str]] = None) -> list[dict]:
  """Runs every (seed, strategy, implementation); returns the JSON lines printed."""
  fv, config = parse_flags(argv)
  driver.setup_devices(config)  # A run's CPU split and kernels (before JAX starts, if it has not).
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  lines, out = [], open(fv.out, 'w') if fv.out else None  # pylint: disable=consider-using-with

  def emit(record: dict) -> dict:
    lines.append(bench_utils.emit(record))
    if out:
      out.write(json.dumps(lines[-1]) + '\n')
      out.flush()
    return lines[-1]

  try:
    if fv.summarize:
      records = read_run_lines(fv.summarize)
    elif 'reference' in fv.implementations and (why := reference_missing(fv.reference_dir)):
      emit({'impl': 'reference', 'skipped': why})
      return lines
    else:
      with tempfile.TemporaryDirectory() as tmp:
        run_all(fv, config, fv.workdir or tmp, emit)
      records = list(lines)
    cycles = [r for r in records if 'cycle' in r and 'summary' not in r]
    runs = [r for r in records if 'wall_seconds' in r]
    for summary in (accuracy_summaries(cycles) + gap_summaries(cycles) +
                    tod_loss_summaries(cycles) + wall_summaries(runs)):
      emit(summary)
  finally:
    if out:
      out.close()
  return lines


def run_all(fv: flags.FlagValues, config: Any, workdir: str, emit) -> None:
  """One run per (seed, strategy, implementation): a line per cycle, then one per run."""
  ref = torch = data = None
  synthetic = (bench_utils.synthetic_cifar(fv.synthetic_cifar, fv.synthetic_cifar // 5)
               if fv.synthetic_cifar else None)
  if 'reference' in fv.implementations:
    ref, torch = import_reference(fv.reference_dir)
    if fv.torch_threads:
      torch.set_num_threads(fv.torch_threads)
    data = reference_data(torch, config, synthetic or datasets.load_digits())
  for seed in (int(s) for s in fv.seeds):
    for strategy in fv.strategies:
      for semi in (True, False) if fv.ablation else (bool(config.semi),):
        run_config = copy.deepcopy(config)
        run_config.semi = semi
        name = f'{strategy}_seed{seed}' + ('_nosemi' if fv.ablation and not semi else '')
        for impl in (i for i in IMPLS if i in fv.implementations):
          if impl == 'tod_jax':
            records, wall = run_tod_jax(run_config, strategy, seed, os.path.join(workdir, name),
                                        synthetic)
          else:
            records, wall = run_reference(ref, torch, run_config, data, strategy, seed)
          extra = ({'torch': torch.__version__, 'torch_threads': torch.get_num_threads()}
                   if impl == 'reference' else {})
          key = {'impl': impl, 'strategy': strategy, 'seed': seed, 'semi': semi}
          for record in records:
            emit({**key, **record, **extra})
          emit({**key, 'wall_seconds': wall, 'num_cycles': config.num_cycles,
                'num_epochs': config.num_epochs, **extra})


if __name__ == '__main__':
  main()
