"""A real 2-process JAX cluster on localhost (gloo CPU collectives, one CPU device each).

One test, about a minute: a 2-process digits run is killed (kill -9 of process 1) during
cycle 2, process 0 then fails within the heartbeat timeout instead of hanging, the
relaunched cluster resumes after cycle 1, and the result equals a 1-process run on 2 CPU
devices (same labeled set, same records). Only process 0 writes files.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cpu_env
from tod_jax import launch, rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--config=configs/digits.py', '--config.num_cycles=2', '--config.num_epochs=2',
        '--config.batch_size=32', '--config.unlabeled_batch_size=16',
        '--config.progress_bar=False', '--config.distributed.timeout=15']


def _env():
  return cpu_env()


def _records(workdir):
  return [{k: v for k, v in r.items() if not k.endswith('seconds')}
          for r in rundir.read_metrics(workdir)]


def test_two_processes_equal_one_process_on_two_devices_and_resume_after_kill(tmp_path):
  single, multi = str(tmp_path / 'single'), str(tmp_path / 'multi')
  subprocess.run([sys.executable, '-m', 'tod_jax.main', *ARGS, f'--workdir={single}',
                  '--config.num_cpu_devices=2'], cwd=ROOT, env=_env(), check=True,
                 capture_output=True, timeout=300)

  # Both processes by hand, so that one can be killed mid-run.
  port = launch.free_port()
  env = dict(_env(), JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', JAX_NUM_CPU_DEVICES='1')
  procs = [subprocess.Popen(launch.process_argv('tod_jax.main', ARGS + [f'--workdir={multi}'],
                                                i, 2, port),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  first = os.path.join(multi, 'checkpoints', '1')
  deadline = time.monotonic() + 240
  while not os.path.isdir(first) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert os.path.isdir(first), procs[0].communicate(timeout=60)[1][-3000:]
  os.kill(procs[1].pid, signal.SIGKILL)
  start = time.monotonic()
  procs[0].wait(timeout=120)  # The survivor must not hang: it ends within the timeout.
  assert procs[0].returncode != 0 and time.monotonic() - start < 90
  procs[1].wait()
  if len(rundir.read_metrics(multi)) == 1:  # Killed inside cycle 2, as intended.
    assert not os.path.isdir(os.path.join(multi, 'checkpoints', '2'))

  # Relaunched with the launcher: resumes after cycle 1 and finishes.
  result = subprocess.run([sys.executable, '-m', 'tod_jax.launch', '--num_processes=2', '--',
                           *ARGS, f'--workdir={multi}'], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-4000:]
  assert '[p0] ' in result.stdout and '[p1] ' in result.stdout
  np.testing.assert_array_equal(rundir.final_labeled(multi), rundir.final_labeled(single))
  got, expected = _records(multi), _records(single)
  assert [r['cycle'] for r in got] == [1, 2]
  for g, e in zip(got, expected):
    assert {k: v for k, v in g.items() if not isinstance(v, float)} == {
        k: v for k, v in e.items() if not isinstance(v, float)}
    for key in ('test_accuracy', 'ema_test_accuracy', 'train_loss'):
      assert g[key] == pytest.approx(e[key], rel=1e-5, abs=1e-6), key
  # Process 0 alone wrote: one TensorBoard event file per launch, no temporary files left.
  events = os.listdir(os.path.join(multi, 'tensorboard'))
  assert len(events) == 2, events  # The killed launch's and the relaunch's, both process 0's.
  leftovers = [f for _, _, files in os.walk(multi) for f in files if f.endswith('.tmp')]
  assert not leftovers


def test_host_pool_two_processes_score_their_blocks_like_one_process(tmp_path):
  """config.distributed.host_pool: each process holds half the pool; the kept COD outputs a cycle
  checkpoints equal w_c's outputs computed over the whole pool in one process, and the
  query is the top of the COD scores recomputed from w_{c-1} and w_c."""
  from tod_jax import analyze  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / 'host_pool')
  result = subprocess.run([sys.executable, '-m', 'tod_jax.launch', '--num_processes=2', '--',
                           *ARGS, '--config.distributed.host_pool=True', f'--workdir={workdir}'],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-4000:]
  for p, rows in ((0, '[0, 718)'), (1, '[718, 1437)')):
    assert f'Process {p} holds pool rows {rows} of 1437' in result.stdout
  run = analyze.Run(workdir)
  try:
    images = run.dataset.train_images
    previous = run.restore(1)[0].variables
    state, meta, _ = run.restore(2)
    kept = state.strategy_state['kept_outputs']
    candidates = np.nonzero(kept['valid'])[0]
    labeled, queried = run.cycle_sets(meta)
    np.testing.assert_array_equal(candidates, np.setdiff1d(np.arange(1437), labeled))
    current = run.scorer.outputs(state.variables, images, candidates)
    np.testing.assert_allclose(np.asarray(kept['outputs'])[candidates], current,
                               rtol=1e-5, atol=1e-6)
    scores = run.scorer.discrepancy(current, run.scorer.outputs(previous, images, candidates))
    top = candidates[np.argsort(-scores, kind='stable')[:len(queried)]]
    np.testing.assert_array_equal(np.sort(top), np.sort(queried))
  finally:
    run.close()
