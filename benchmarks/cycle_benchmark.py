"""Wall time of active-learning cycles, split into train / evaluate / score / select / checkpoint.

Runs the driver's own cycle function (tod_jax.cycle.run_cycle) and reads each
phase's seconds from its record (train, first step, evaluate, score + select),
times ranking.top_b and rundir.save beside it; one JSON line per cycle, with host
peak RSS and, where the backend reports it, the device's peak bytes. Every
strategy and loss teacher runs, as in a real run:

  python benchmarks/cycle_benchmark.py                     # embedded digits, 2 cycles
  python benchmarks/cycle_benchmark.py --config=configs/cifar10.py --synthetic_cifar=5000 \\
      --config.num_epochs=2 --protocol_estimate            # ResNet-18, CIFAR-shaped data
  python benchmarks/cycle_benchmark.py --config=configs/cifar10.py --fraction=0.02
  python benchmarks/cycle_benchmark.py --smoke             # digits, 1 epoch (for the tests)

Cycle 1 includes compilation; later cycles show the steady state (e.g. COD's kept
outputs: one forward pass per pool image). `train_first_step_seconds` is the
cycle's first step (it compiles when the cycle builds its step function) and
`train_step_seconds` the mean of its other steps.

--protocol_estimate prints an ESTIMATE of the CIFAR-10 protocol's wall time (pool
50,000, test 10,000, --protocol_epochs per cycle, the config's fractions, cycles and
batch size) from the rates measured in the last cycle: per cycle c, epochs *
ceil(labeled_c / batch) steps at `train_step_seconds`, the scored candidates at the
measured seconds per image, the test set at the measured evaluation rate, plus the last
cycle's compile, select and checkpoint times. --fraction=f runs the whole protocol (all
config.num_cycles cycles of config.num_epochs) on round(f * 50,000) synthetic CIFAR-shaped
images (test round(f * 10,000)), so about f of the protocol's work, and prints the
measured total beside the same estimate for that fractional run, then the full estimate.
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from tod_jax import batches, checkpointing, datasets, ranking, rundir  # noqa: E402
from tod_jax import cycle as cycle_lib  # noqa: E402
from tod_jax.dataset import Dataset  # noqa: E402

CIFAR10_POOL, CIFAR10_TEST = 50_000, 10_000


def parse_flags(argv):
  fv = bench_utils.config_flag_values('digits.py', argv)
  flags.DEFINE_integer('cycles', 2, 'Cycles to run (0: config.num_cycles).', flag_values=fv)
  flags.DEFINE_integer('synthetic_cifar', 0, 'Use this many synthetic 32x32x3 images (and a '
                       'fifth as many test images) instead of config.dataset.', flag_values=fv)
  flags.DEFINE_bool('protocol_estimate', False, 'Estimate the CIFAR-10 protocol wall time '
                    'from the measured rates.', flag_values=fv)
  flags.DEFINE_integer('protocol_epochs', 200, 'Epochs per cycle in the estimated CIFAR-10 '
                       'protocol (the measured cycles use config.num_epochs).', flag_values=fv)
  flags.DEFINE_float('fraction', 0.0, 'Run the whole protocol on this fraction of CIFAR-10 '
                     '(synthetic data) and compare with the estimate.', flag_values=fv)
  flags.DEFINE_string('workdir', '', 'Checkpoint directory (default: a temporary one).',
                      flag_values=fv)
  flags.DEFINE_bool('smoke', False, '2 epochs, 2 cycles, a 2-cycle protocol (for the tests).',
                    flag_values=fv)
  config = bench_utils.parse_run_config(fv, 'cycle_benchmark', argv)
  if fv.smoke:
    config.num_epochs, config.num_cycles, fv.cycles = 2, 2, 2
  if fv.fraction:
    fv.synthetic_cifar, fv.cycles = round(fv.fraction * CIFAR10_POOL), config.num_cycles
  return fv, config


def load(fv, config) -> Dataset:
  if fv.synthetic_cifar:
    num_test = (round(fv.fraction * CIFAR10_TEST) if fv.fraction else fv.synthetic_cifar // 5)
    return bench_utils.synthetic_cifar(fv.synthetic_cifar, num_test, config.seed)
  return datasets.load_dataset(config)


def run_cycles(config, dataset, num_cycles, workdir):
  """Runs `num_cycles` cycles with cycle.run_cycle (the driver's own function); yields one
  timing record per cycle, its phases read from the cycle's record."""
  experiment = cycle_lib.setup(config, dataset)
  labeled = np.random.default_rng(config.seed).choice(dataset.pool_size,
                                                      experiment.initial_size, replace=False)
  state = cycle_lib.initial_state(experiment, labeled)
  chunk = experiment.scorer.chunk_size
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    for _ in range(num_cycles):
      num_labeled = len(state.labeled)
      n_steps = config.num_epochs * batches.steps_per_epoch(num_labeled, config.batch_size)
      candidates = min(dataset.pool_size - num_labeled, config.pool_subset or dataset.pool_size)
      state, record = cycle_lib.run_cycle(experiment, state, dataset)
      line = record.metrics
      times = {'train': line['train_seconds'], 'evaluate': line['evaluate_seconds'],
               'select': 0.0}
      if record.query_scores is not None:  # The strategy's own top_b, timed alone.
        scores = np.random.default_rng(0).random(candidates)
        _, times['select'] = bench_utils.timed(
            lambda: ranking.top_b(scores, np.arange(candidates), experiment.budget))
      times['score'] = line['score_seconds'] - times['select']
      _, times['checkpoint'] = bench_utils.timed(lambda: rundir.save(checkpointer, state, record))
      first_step_seconds = line['train_first_step_seconds']
      yield {'cycle': line['cycle'], 'dataset': dataset.name, 'model': config.model,
             'strategy': config.strategy, 'loss_teacher': config.loss_teacher,
             'pool': dataset.pool_size, 'test': len(dataset.test_labels),
             'num_labeled': num_labeled, 'candidates': candidates, 'train_steps': n_steps,
             **{f'{phase}_seconds': seconds for phase, seconds in times.items()},
             'total_seconds': sum(times.values()),
             'train_first_step_seconds': first_step_seconds,
             # None with one step: it also compiled, so it is no steady-state rate.
             'train_step_seconds': ((times['train'] - first_step_seconds) / (n_steps - 1)
                                    if n_steps > 1 else None),
             # Per image computed: the Scorer pads the last chunk; evaluation runs two models.
             'chunk': chunk,
             'score_seconds_per_image': times['score'] / padded(candidates, chunk),
             'evaluate_seconds_per_image': (times['evaluate'] /
                                            (2 * padded(len(dataset.test_labels), chunk))),
             **bench_utils.peak_memory()}
  finally:
    checkpointer.close()


def padded(n: int, chunk: int) -> int:
  return -(-n // chunk) * chunk


def protocol_estimate(config, rates: dict, pool: int, test: int, epochs: int) -> dict:
  """Estimated seconds of config.num_cycles cycles of `epochs` on `pool`/`test` from `rates`."""
  if rates['train_step_seconds'] is None:
    raise ValueError(f"Cycle {rates['cycle']} trained one step, which includes compilation, so "
                     'there is no per-step rate to estimate from; raise --config.num_epochs '
                     '(or --synthetic_cifar) to train at least 2 steps per cycle.')
  initial, budget = cycle_lib.plan_sizes(config, pool)
  train_s = score_s = 0.0
  steps = scored = 0
  for cycle in range(config.num_cycles):
    labeled = initial + cycle * budget
    n = epochs * batches.steps_per_epoch(labeled, config.batch_size)
    candidates = pool - labeled
    if config.pool_subset:
      candidates = min(candidates, config.pool_subset)
    # COD with kept outputs runs two passes in cycle 1 only (w_0 has no kept outputs); the
    # rates of a later cycle are for one.
    passes = 2 if (cycle == 0 and rates['cycle'] > 1 and config.strategy == 'cod'
                   and config.kept_outputs.enabled) else 1
    steps, scored = steps + n, scored + candidates
    train_s += n * rates['train_step_seconds']
    score_s += passes * padded(candidates, rates['chunk']) * rates['score_seconds_per_image']
  other_s = config.num_cycles * (
      2 * padded(test, rates['chunk']) * rates['evaluate_seconds_per_image']
      + rates['train_first_step_seconds']
      + rates['select_seconds'] + rates['checkpoint_seconds'])
  return {'estimate': 'from measured rates', 'protocol_pool': pool, 'protocol_test': test,
          'protocol_cycles': config.num_cycles, 'protocol_epochs': epochs,
          'protocol_train_steps': steps, 'protocol_scored_images': scored,
          'estimated_train_seconds': train_s, 'estimated_score_seconds': score_s,
          'estimated_other_seconds': other_s,
          'estimated_seconds': train_s + score_s + other_s,
          'rates_from_cycle': rates['cycle']}


def main(argv=None):
  fv, config = parse_flags(argv)
  dataset = load(fv, config)
  if (fv.protocol_estimate or fv.fraction) and dataset.image_shape != (32, 32, 3):
    raise ValueError(f'The CIFAR-10 estimate needs 32x32x3 images, not {dataset.image_shape}; '
                     'add --synthetic_cifar=N (or --fraction=f) and --config=configs/cifar10.py.')
  lines = []
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    for record in run_cycles(config, dataset, fv.cycles or config.num_cycles,
                             fv.workdir or tmp):
      lines.append(bench_utils.emit(record))
    total = time.perf_counter() - start
  if fv.fraction:
    lines.append(bench_utils.emit({
        'fraction': fv.fraction, 'measured_seconds': total, 'pool': dataset.pool_size,
        **protocol_estimate(config, lines[-1], dataset.pool_size, len(dataset.test_labels),
                            config.num_epochs)}))
  if fv.protocol_estimate or fv.fraction:
    last_cycle = [line for line in lines if 'cycle' in line][-1]
    lines.append(bench_utils.emit(protocol_estimate(config, last_cycle, CIFAR10_POOL,
                                                    CIFAR10_TEST, fv.protocol_epochs)))
  return lines


if __name__ == '__main__':
  main()
