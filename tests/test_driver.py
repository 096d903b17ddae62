"""The driver end to end: a 2-cycle run, resume, and the bad-input errors."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compilations, cpu_env, make_tiny_config
from tod_jax import augment, caches, checkpointing, devices, driver, errors, rundir, tod, train
from tod_jax import cycle as cycle_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _snapshot(workdir):
  """Bytes of every file a run keeps, to prove a failure changed nothing."""
  out = {}
  for base, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(base, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  config = make_tiny_config()
  config.num_cycles = 3
  workdir = str(tmp_path_factory.mktemp('full'))
  return config, workdir, driver.run(config, workdir)


def test_run_writes_metrics_and_checkpoints(uninterrupted):
  config, workdir, records = uninterrupted
  assert [r['cycle'] for r in records] == [1, 2, 3]
  assert [r['num_labeled'] for r in records] == [144, 216, 288]  # 10% of 1,437, +72 a cycle.
  assert _records(workdir) == records
  for r in records:
    assert 0.0 <= r['test_accuracy'] <= 1.0 and r['strategy'] == 'cod' and r['seed'] == 0
    assert r['train_seconds'] > 0 and r['score_seconds'] >= 0 and r['num_queried'] == 72
  assert records[-1]['test_accuracy'] > 0.3  # Well above chance (0.1) after 3 short cycles.
  labeled = rundir.final_labeled(workdir)
  assert len(labeled) == 360 and len(np.unique(labeled)) == 360
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2', '3']


def test_queries_are_new_unlabeled_indices(uninterrupted):
  _, workdir, _ = uninterrupted
  ckpt = checkpointing.Checkpointer(workdir)
  metas = [ckpt.restore_meta(c) for c in (1, 2)]
  ckpt.close()
  before, after = set(metas[0]['labeled']), set(metas[1]['labeled'])
  queried = set(metas[1]['queried'])
  assert len(queried) == 72 and not queried & before and after == before | queried


def _strip(records):
  return [{k: v for k, v in r.items() if not k.endswith('seconds')} for r in records]


def _before_cycle(monkeypatch, number: int, action) -> None:
  """Makes train.train_cycle call `action()` before it trains cycle `number`."""
  original = train.train_cycle

  def patched(state, inputs, *args, **kwargs):
    if inputs.cycle == number:
      action()
    return original(state, inputs, *args, **kwargs)

  monkeypatch.setattr(train, 'train_cycle', patched)


def test_resume_after_interruption_gives_the_same_labeled_set(uninterrupted, tmp_path,
                                                              monkeypatch):
  config, full_dir, full_records = uninterrupted
  workdir = str(tmp_path)

  def ctrl_c():
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    _before_cycle(patch, 3, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
      driver.run(config, workdir)
  assert [r['cycle'] for r in _records(workdir)] == [1, 2]
  resumed = driver.run(config, workdir)
  np.testing.assert_array_equal(rundir.final_labeled(workdir), rundir.final_labeled(full_dir))
  assert _strip(resumed) == _strip(full_records)


def test_ctrl_c_a_library_swallows_still_stops_after_the_cycle(uninterrupted, tmp_path,
                                                              monkeypatch):
  config, _, full_records = uninterrupted
  workdir = str(tmp_path)

  def swallowed_ctrl_c():
    try:  # As a dependency that catches BaseException would.
      os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # pylint: disable=broad-except
      pass

  _before_cycle(monkeypatch, 2, swallowed_ctrl_c)
  with pytest.raises(errors.Interrupted, match='cycle 3 was not started, cycle 2 is kept'):
    driver.run(config, workdir)
  assert _strip(_records(workdir)) == _strip(full_records[:2])
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_rerun_of_finished_run_does_nothing(uninterrupted):
  config, workdir, records = uninterrupted
  before = _snapshot(os.path.join(workdir, 'checkpoints'))
  assert driver.run(config, workdir) == records
  assert _snapshot(os.path.join(workdir, 'checkpoints')) == before


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tiny_config, tmp_path,
                                                                   monkeypatch):
  workdir = str(tmp_path)
  tiny_config.num_cycles = 1
  driver.run(tiny_config, workdir)
  before = _snapshot(workdir)
  labeled_before = rundir.final_labeled(workdir)
  monkeypatch.setattr(tod, 'supervised_loss', lambda logits, labels, **_: jnp.nan * logits.sum())
  tiny_config.num_cycles = 2
  with caches.scoped(), pytest.raises(train.NonFiniteLossError,
                                      match='cycle 2.*lower --config.learning_rate'):
    driver.run(tiny_config, workdir)  # Empty caches: the step is traced with the NaN loss.
  after = _snapshot(workdir)
  after.pop('config.json'), before.pop('config.json')  # num_cycles may change on resume.
  assert after == before
  np.testing.assert_array_equal(rundir.final_labeled(workdir), labeled_before)


def test_workdir_of_another_config_is_refused(tiny_config, tmp_path):
  tiny_config.num_cycles = 1
  driver.run(tiny_config, str(tmp_path))
  tiny_config.learning_rate = 0.5
  with pytest.raises(rundir.ConfigMismatchError, match='learning_rate: 0.05 there, 0.5 now'):
    driver.run(tiny_config, str(tmp_path))


def test_damaged_checkpoint_is_a_clear_error(tiny_config, tmp_path):
  tiny_config.num_cycles = 1
  driver.run(tiny_config, str(tmp_path))
  model_dir = os.path.join(str(tmp_path), 'checkpoints', '1', 'model')
  for base, _, files in os.walk(model_dir):
    for name in files:
      with open(os.path.join(base, name), 'wb') as f:
        f.write(b'garbage')
  tiny_config.num_cycles = 2
  with pytest.raises(checkpointing.CheckpointError, match='Cannot restore checkpoint .*1'):
    driver.run(tiny_config, str(tmp_path))


@pytest.mark.parametrize('field,value,message', [
    ('dataset', 'mnist', "Unknown dataset 'mnist'"),
    ('strategy', 'oracle', "Unknown strategy 'oracle'"),
    ('model', 'vit', "Unknown model 'vit'"),
    ('score_output', 'probs', 'Unknown model output'),
    ('budget_fraction', 0.5, 'cycles need .* but the pool has 1437'),
    ('compute_dtype', 'float16', "compute_dtype 'float16' is not supported"),
    ('data_on_device', 'yes', "data_on_device 'yes' is not one of"),
    ('cpu_convolutions', 'onednn', "Unknown cpu_convolutions 'onednn'"),
])
def test_bad_config_values_fail_before_anything_is_written(tiny_config, tmp_path, field, value,
                                                           message):
  tiny_config[field] = value
  workdir = os.path.join(str(tmp_path), 'run')
  with pytest.raises(ValueError, match=message):
    driver.run(tiny_config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


def test_setup_devices_splits_the_cpu_and_picks_eigen_convolutions_before_jax_starts():
  """config.num_cpu_devices=3 gives a 3-device CPU mesh, and cpu_convolutions='eigen'
  compiles a convolution without YNNPACK (a fresh process: JAX not started)."""
  code = ('from configs import digits; from tod_jax import driver, sharded_map\n'
          'config = digits.get_config(); config.num_cpu_devices = 3\n'
          'config.cpu_convolutions = "eigen"\n'
          'driver.setup_devices(config)\n'
          'import jax, jax.numpy as jnp\n'
          'def hlo(**options):\n'
          '  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", '
          'dimension_numbers=("NHWC", "HWIO", "NHWC")), compiler_options=options)\n'
          '  x, w = jnp.ones((4, 32, 32, 64)), jnp.ones((3, 3, 64, 64))\n'
          '  return conv.lower(x, w).compile().as_text()\n'
          'ynn = {"xla_cpu_experimental_ynn_fusion_type": '
          '"LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}\n'
          'print(jax.device_count(), sharded_map.make_mesh().size, "__ynn_fusion" in hlo(), '
          '"__ynn_fusion" in hlo(**ynn))')  # The last: the same conv with YNNPACK's convolutions.
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=cpu_env(XLA_FLAGS=''))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['3', '3', 'False', 'True']


def test_xla_flags_add_eigen_convolutions_only_where_they_apply():
  config = make_tiny_config()
  config.deterministic = False  # Its flag: the next test.
  assert config.cpu_convolutions == 'auto'
  assert devices.xla_flags(config, '', '0.10.2', large_model=True) == devices.EIGEN_CONV_FLAG
  assert devices.xla_flags(config, '', '0.10.2', large_model=False) == ''
  config.cpu_convolutions = 'eigen'
  assert devices.xla_flags(config, '--xla_foo=1', '0.11.0', large_model=False) == (
      f'--xla_foo=1 {devices.EIGEN_CONV_FLAG}')
  mine = '--xla_cpu_experimental_ynn_fusion_type=individual_dot'
  assert devices.xla_flags(config, mine, '0.10.2', True) == mine  # The user's own choice stays.
  for version in ('0.9.2', '0.12.0', '1.0.0'):  # Jaxlibs not known to have the flag.
    assert devices.xla_flags(config, '--xla_foo=1', version, True) == '--xla_foo=1'
  config.cpu_convolutions = 'xla_default'
  assert devices.xla_flags(config, '', '0.10.2', large_model=True) == ''
  config.cpu_convolutions = 'mkl'
  with pytest.raises(ValueError, match="Unknown cpu_convolutions 'mkl'"):
    devices.xla_flags(config, '', '0.10.2', True)


def test_xla_flags_make_gpu_kernels_deterministic_by_default():
  config = make_tiny_config()
  assert config.deterministic and config.cpu_convolutions == 'auto'
  flag = devices.DETERMINISTIC_FLAG
  assert devices.xla_flags(config, '', '0.10.2', large_model=False) == flag
  assert devices.xla_flags(config, '--xla_foo=1', '0.12.0', large_model=True) == (
      f'--xla_foo=1 {flag}')  # jaxlib 0.12 knows it; the Eigen flag it does not.
  mine = '--xla_gpu_deterministic_ops=false'
  assert devices.xla_flags(config, mine, '0.10.2', False) == mine  # The user's own choice stays.
  assert devices.xla_flags(config, '', '0.13.0', False) == ''  # Not known to have it.
  config.deterministic = False
  assert devices.xla_flags(config, '', '0.10.2', False) == ''


def test_two_cycle_synthetic_segmentation_run(tmp_path):
  from configs import synthetic_seg  # pylint: disable=import-outside-toplevel
  config = synthetic_seg.get_config()
  config.num_cycles, config.num_epochs = 2, 1
  config.progress_bar, config.tensorboard = False, False
  workdir = str(tmp_path)
  records = driver.run(config, workdir)
  assert _records(workdir) == records
  assert [r['num_labeled'] for r in records] == [40, 60]  # 10% of 400, +20 a cycle.
  for r in records:
    assert r['dataset'] == 'synthetic_seg' and r['num_queried'] == 20
    ious = r['per_class_iou']
    assert len(ious) == 5 and all(v is None or 0.0 <= v <= 1.0 for v in ious)
    assert r['test_miou'] == pytest.approx(np.mean([v for v in ious if v is not None]))
    assert 0.0 <= r['test_accuracy'] <= 1.0 and 0.0 <= r['ema_test_miou'] <= 1.0
  labeled = rundir.final_labeled(workdir)
  assert len(labeled) == 80 and len(np.unique(labeled)) == 80


def test_segmentation_crop_larger_than_images_fails_before_training(tmp_path):
  from configs import synthetic_seg  # pylint: disable=import-outside-toplevel
  config = synthetic_seg.get_config()
  config.crop_size = 48
  with pytest.raises(ValueError, match=r'crop_size 48 exceeds the synthetic_seg images'):
    driver.run(config, str(tmp_path))
  assert not os.path.exists(os.path.join(str(tmp_path), 'checkpoints'))


def test_ll4al_with_cyclic_loss_trains_its_module_and_resumes(tmp_path):
  """The loss prediction module is checkpointed with the model: resuming restores it."""
  config = make_tiny_config()
  config.strategy, config.loss_teacher, config.num_epochs, config.num_cycles = (
      'll4al', 'cyclic', 1, 1)
  workdir = str(tmp_path)
  first = driver.run(config, workdir)
  config.num_cycles = 2
  records = driver.run(config, workdir)
  assert records[:1] == first and [r['cycle'] for r in records] == [1, 2]
  assert len(rundir.final_labeled(workdir)) == 144 + 2 * 72


@pytest.mark.parametrize('field,value,match', [('loss_teacher', 'teacher', 'loss_teacher'),
                                               ('strategy', 'bald', 'dropout_rate')])
def test_validate_config_rejects_unusable_strategy_settings(field, value, match):
  config = make_tiny_config()
  config[field] = value
  with pytest.raises(ValueError, match=match):
    driver.validate_config(config)


def _restored(config, workdir, cycle):
  """(state after `cycle`, its meta, its snapshots, model, dataset) of the run in `workdir`."""
  dataset, _ = driver.load_run_dataset(config)
  experiment = cycle_lib.setup(config, dataset)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    state, meta, snapshots = rundir.restore(ckpt, cycle, experiment)
  finally:
    ckpt.close()
  return state, meta, snapshots, experiment.model, dataset


def _softmax_outputs(model, variables, dataset, indices):
  x = augment.normalize(dataset.train_images[indices], dataset.mean, dataset.std)
  return np.asarray(jax.nn.softmax(model.apply(variables, x, train=False), -1), np.float64)


def test_default_cycle_1_cod_query_takes_the_less_confident_samples(tmp_path):
  """cod_first_cycle='lowest' (default): against the near-flat initial softmax, the lowest
  COD goes to samples the trained model is least sure of."""
  config = make_tiny_config()
  config.num_cycles, config.num_epochs = 1, 5
  assert config.cod_first_cycle == 'lowest'
  driver.run(config, str(tmp_path))
  state, meta, _, model, dataset = _restored(config, str(tmp_path), 1)
  variables = state.variables
  queried = np.asarray(meta['queried'])
  unlabeled = np.setdiff1d(np.arange(dataset.pool_size), np.setdiff1d(meta['labeled'], queried))
  top = lambda idx: _softmax_outputs(model, variables, dataset, idx).max(-1).mean()
  assert meta['query_order'] == 'lowest'
  assert top(queried) < top(unlabeled) - 0.05, (top(queried), top(unlabeled))


def test_cod_interval_scores_against_the_snapshot_one_epoch_back(tmp_path):
  """cod_interval='1epoch': the query's scores are ||softmax(w_c) - softmax(w_snapshot)|| and
  it takes the highest, also in cycle 1."""
  config = make_tiny_config()
  config.num_cycles, config.cod_interval = 1, '1epoch'
  driver.run(config, str(tmp_path))
  state, meta, snapshots, model, dataset = _restored(config, str(tmp_path), 1)
  current = state.variables
  snapshot = snapshots['1epoch']
  assert meta['extra_baselines_steps_back'] == {'1epoch': 5}  # 144 labeled / batch 32.
  queried = np.asarray(meta['queried'])
  labeled = np.setdiff1d(meta['labeled'], queried)
  unlabeled = np.setdiff1d(np.arange(dataset.pool_size), labeled)
  by_hand = np.linalg.norm(_softmax_outputs(model, current, dataset, unlabeled)
                           - _softmax_outputs(model, snapshot, dataset, unlabeled), axis=-1)
  np.testing.assert_allclose(meta['query_scores'],
                             by_hand[np.searchsorted(unlabeled, queried)], rtol=1e-4, atol=1e-6)
  assert meta['query_order'] == 'highest'
  np.testing.assert_array_equal(np.sort(queried),
                                np.sort(unlabeled[np.argsort(-by_hand, kind='stable')[:72]]))


def test_runs_differing_by_seed_or_strategy_share_one_compiled_step(tmp_path, monkeypatch):
  """The step is jitted on the few config values it uses (train.StepSettings), and models
  and scorers are shared per setting: a comparison compiles its step once."""
  traced, original = [], train.train_step

  def counting_step(*args, **kwargs):
    traced.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(train, 'train_step', counting_step)
  with caches.scoped():
    for seed, strategy in ((0, 'cod'), (1, 'random'), (2, 'entropy')):
      config = make_tiny_config()
      config.num_cycles, config.num_epochs, config.seed, config.strategy = 1, 1, seed, strategy
      driver.run(config, str(tmp_path / f'{strategy}_{seed}'))
  assert len(traced) == 1


def test_a_run_with_scanned_steps_queries_and_scores_as_single_steps(tmp_path,
                                                                     highest_precision):
  """A whole digits run (2 cycles, 2 epochs of 5 steps: a block of 4 and a single step each)
  with steps_per_dispatch=4 queries the same samples, with the same accuracies and losses up
  to rounding, as one step per dispatch."""
  runs = []
  for per_dispatch in (1, 4):
    config = make_tiny_config()
    config.steps_per_dispatch, config.data_on_device = per_dispatch, 'always'
    workdir = str(tmp_path / str(per_dispatch))
    driver.run(config, workdir)
    ckpt = checkpointing.Checkpointer(workdir)
    runs.append(([ckpt.restore_meta(c)['labeled'] for c in (1, 2)], _records(workdir)))
    ckpt.close()
  (labeled_1, records_1), (labeled_4, records_4) = runs
  assert labeled_1 == labeled_4
  for one, four in zip(records_1, records_4):
    for key in ('test_accuracy', 'ema_test_accuracy', 'train_loss'):
      assert four[key] == pytest.approx(one[key], abs=1e-5), key


def test_a_second_cycles_evaluation_compiles_nothing(tiny_config):
  """Both models are evaluated in one compiled pass, compiled in cycle 1 and reused after."""
  from tod_jax import datasets  # pylint: disable=import-outside-toplevel
  ds = datasets.load_digits()
  experiment = cycle_lib.setup(tiny_config, ds)
  labeled = np.random.default_rng(0).choice(ds.pool_size, experiment.initial_size, replace=False)
  state = cycle_lib.initial_state(experiment, labeled)
  for _ in range(2):
    state, record = cycle_lib.run_cycle(experiment, state, ds)
  with compilations() as compiled:
    evaluation = cycle_lib.evaluate_models(experiment.scorer,
                                           (state.variables, state.ema_variables), ds)
  assert compiled == []
  assert [e['accuracy'] for e in evaluation] == [record.metrics['test_accuracy'],
                                                  record.metrics['ema_test_accuracy']]
  assert evaluation[0]['accuracy'] == experiment.scorer.accuracy(state.variables, ds.test_images,
                                                                 ds.test_labels)
