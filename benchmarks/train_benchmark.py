"""TOD train-step throughput: tod_jax's jitted step vs the same step in plain PyTorch.

One step: random crop + flip of 128 labeled and 128 unlabeled CIFAR-shaped images,
the model and the EMA model (training mode, its own BatchNorm statistics) on them,
CE(labeled) + lambda * the unsupervised term in config.tod_loss_form (default
'reference', the authors' code: two heads, labeled and unlabeled in separate passes;
'paper': one pass, Eq. 7 on the unlabeled outputs), SGD with momentum and weight
decay, then the EMA update of the parameters (Eq. 6). Both implementations take their hyper-parameters from
the same config, run in the same invocation, and print one JSON line each, then the
line with their ratio:

  python benchmarks/train_benchmark.py                      # ResNet-18, batch 128+128
  python benchmarks/train_benchmark.py --impl=jax --config.<field>=...   # any config field
  python benchmarks/train_benchmark.py --smoke              # small CNN, tiny batch (tests)

tod_jax runs `train.train_cycle` (the run's own loop: batches gathered from host
arrays, the jitted step) over --steps steps after a one-step cycle that compiles;
`compile_seconds` is that first cycle (compile plus one step; with
config.steps_per_dispatch K > 1, plus K + 1 steps: a scanned block and a single step). The PyTorch baseline is
written the straightforward way, as in the authors' code: model and EMA model,
DataLoaders over CPU tensors whose per-image transform crops and flips, torch.optim.SGD.
It needs torch==2.13.0 (the `bench` extra) and is reported as skipped without it.
"""

import copy
import os
import sys
import time

import jax
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import cycle, driver, loss_forms, models, train  # noqa: E402
from tod_jax.train_state import create_optimizer, create_train_state, init_variables  # noqa: E402


def parse_flags(argv, name):
  """Parses `argv` into fresh FlagValues (so main() can run more than once in a process)."""
  fv = bench_utils.config_flag_values('cifar10.py', argv)
  flags.DEFINE_integer('batch', 128, 'Labeled and unlabeled batch size (each).', flag_values=fv)
  flags.DEFINE_integer('steps', 10, 'Timed steps per implementation.', flag_values=fv)
  flags.DEFINE_enum('model', 'resnet18', ['resnet18', 'small_cnn'], 'Network.', flag_values=fv)
  flags.DEFINE_enum('impl', 'all', ['all', 'jax', 'torch'], 'Implementations to run.',
                    flag_values=fv)
  flags.DEFINE_bool('smoke', False, 'Small CNN, batch 8, 2 steps (for the test suite).',
                    flag_values=fv)
  fv([name] + list(sys.argv[1:] if argv is None else argv))
  if fv.smoke:
    fv.batch, fv.steps, fv.model = 8, 2, 'small_cnn'
  config = fv.config
  config.model, config.batch_size, config.unlabeled_batch_size = fv.model, fv.batch, fv.batch
  config.semi, config.num_epochs, config.progress_bar, config.tensorboard = True, 1, False, False
  return fv, config


def bench_jax(config, dataset, steps):
  """(compile_seconds, seconds for `steps` steps) of train.train_cycle."""
  model = models.create_model(config.model, dataset.num_classes, dtype=cycle.train_dtype(config))
  variables = init_variables(model, jax.random.PRNGKey(config.seed), dataset.image_shape,
                             loss_forms.uses_consistency_head(config))
  state = create_train_state(model, variables, create_optimizer(config))
  batch = config.batch_size
  labeled, unlabeled = np.arange(steps * batch), np.arange(steps * batch, dataset.pool_size)
  key, np_rng = jax.random.PRNGKey(1), np.random.default_rng(0)
  # Both calls share one compiled step (train.make_train_step is cached per setting).
  run = lambda state, labeled: train.train_cycle(
      state, train.CycleInputs(dataset, labeled, unlabeled, np_rng, key, cycle=1), config)[0]
  # The warm-up cycle compiles what the timed one runs: one step, or with steps_per_dispatch
  # K > 1 a scanned block of K and a single step (K + 1 steps).
  per = config.steps_per_dispatch
  warm = 1 if per == 1 else min(steps, per + 1)
  state, compile_seconds = bench_utils.timed(lambda: run(state, labeled[:batch * warm]))
  _, seconds = bench_utils.timed(lambda: run(state, labeled))
  return compile_seconds, seconds


def bench_torch(config, dataset, steps):
  """(first step seconds, seconds for `steps` steps) of the straightforward PyTorch step."""
  torch = bench_utils.import_torch()
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel
  from torch.utils.data import DataLoader  # pylint: disable=import-outside-toplevel
  import torch_resnet  # pylint: disable=import-outside-toplevel

  mean = torch.tensor(dataset.mean).view(-1, 1, 1)
  std = torch.tensor(dataset.std).view(-1, 1, 1)
  images = torch.from_numpy(dataset.train_images).permute(0, 3, 1, 2).contiguous()
  labels = torch.from_numpy(dataset.train_labels).long()
  pad = config.crop_padding

  class Augmented(torch.utils.data.Dataset):
    """Per-image random crop (zero padding) and flip, then normalisation."""

    def __init__(self, indices):
      self.indices = indices

    def __len__(self):
      return len(self.indices)

    def __getitem__(self, i):
      i = int(self.indices[i])
      x = images[i].float() / 255.0
      if pad:
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = F.pad(x, (pad, pad, pad, pad))[:, top:top + x.shape[1], left:left + x.shape[2]]
      if config.flip and torch.rand(()) < 0.5:
        x = torch.flip(x, dims=(2,))
      return (x - mean) / std, labels[i]

  batch = config.batch_size
  torch.manual_seed(config.seed)
  labeled = DataLoader(Augmented(np.arange(steps * batch)), batch_size=batch, shuffle=True,
                       drop_last=True)
  unlabeled = DataLoader(Augmented(np.arange(steps * batch, dataset.pool_size)),
                         batch_size=config.unlabeled_batch_size, shuffle=True, drop_last=True)
  device = bench_utils.torch_device(torch)
  model = torch_resnet.MODELS[config.model](dataset.num_classes, images.shape[1])
  model = model.train().to(device)
  ema = copy.deepcopy(model).train()
  for p in ema.parameters():
    p.requires_grad_(False)
  optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate,
                              momentum=config.momentum, weight_decay=config.weight_decay)
  step = [0]

  def paper_loss(x_l, y_l, x_u):
    logits = model(torch.cat([x_l, x_u]))
    with torch.no_grad():
      ema_logits = ema(x_u)
    unsup = ((logits[len(x_l):] - ema_logits) ** 2).sum(1).mean()
    return F.cross_entropy(logits[:len(x_l)], y_l) + config.tod_weight * unsup

  def reference_loss(x_l, y_l, x_u):  # The authors' train_epoch: two heads, two passes each.
    f_l, f_u = model.features(x_l), model.features(x_u)
    with torch.no_grad():
      ema_l, ema_u = ema(x_l), ema(x_u)
    main_l, main_u, cons_l, cons_u = model.fc(f_l), model.fc(f_u), model.cons(f_l), model.cons(f_u)
    unsup = (F.mse_loss(main_l, cons_l) + F.mse_loss(main_u, cons_u)
             + F.mse_loss(cons_l, ema_l) + F.mse_loss(cons_u, ema_u))
    return F.cross_entropy(main_l, y_l) + config.tod_weight * unsup

  loss_fn = reference_loss if config.tod_loss_form == 'reference' else paper_loss

  def train_step(x_l, y_l, x_u):
    loss = loss_fn(x_l, y_l, x_u)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    step[0] += 1
    decay = min(1 - 1 / (step[0] + 1), config.ema_decay)
    with torch.no_grad():
      for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.mul_(decay).add_(p, alpha=1 - decay)

  def run(limit):
    start = time.perf_counter()
    for i, ((x_l, y_l), (x_u, _)) in enumerate(zip(labeled, unlabeled)):
      if i >= limit:
        break
      train_step(x_l.to(device), y_l.to(device), x_u.to(device))
    if device == 'cuda':
      torch.cuda.synchronize()
    return time.perf_counter() - start

  return run(1), run(steps)


def main(argv=None):
  fv, config = parse_flags(argv, 'train_benchmark')
  driver.setup_devices(config)  # The CPU split a user's run gets (num_cpu_devices=-1: auto).
  dataset = bench_utils.synthetic_cifar(fv.steps * (config.batch_size +
                                                     config.unlabeled_batch_size))
  common = {'model': config.model, 'tod_loss_form': config.tod_loss_form,
            'num_cpu_devices': jax.device_count(), 'batch': config.batch_size,
            'unlabeled_batch': config.unlabeled_batch_size, 'steps': fv.steps,
            'train_precision': config.precision.train, 'deterministic': config.deterministic,
            'compute_dtype': cycle.train_dtype(config),
            'steps_per_dispatch': config.steps_per_dispatch}
  lines, by_impl = [], {}
  for name, bench in (('jax', bench_jax), ('torch', bench_torch)):
    if fv.impl not in ('all', name):
      continue
    try:
      first_seconds, seconds = bench(config, dataset, fv.steps)
    except ImportError as e:
      lines.append(bench_utils.skipped(name, str(e)))
      continue
    impl = 'tod_jax' if name == 'jax' else bench_utils.torch_impl(bench_utils.import_torch())
    by_impl[impl] = bench_utils.emit({
        'impl': impl, **common, 'seconds': seconds,
        ('compile_seconds' if name == 'jax' else 'first_step_seconds'): first_seconds,
        'labeled_images_per_s': fv.steps * config.batch_size / seconds,
        'images_per_s': fv.steps * (config.batch_size + config.unlabeled_batch_size) / seconds,
        **bench_utils.peak_memory()})
    lines.append(by_impl[impl])
  if len(by_impl) == 2:
    lines.append(bench_utils.emit(bench_utils.ratio(*by_impl.values(), 'labeled_images_per_s')))
  return lines


if __name__ == '__main__':
  main()
