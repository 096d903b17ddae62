#!/usr/bin/env bash
# The accelerator check, one command, under 8 minutes on one GPU:
#   bash benchmarks/gpu_suite.sh          # on a GPU (or TPU): writes benchmarks/results/<device>.jsonl
#   bash benchmarks/gpu_suite.sh smoke    # tiny sizes, no test suite, any machine (the tests run this)
#   bash benchmarks/gpu_suite.sh targets  # only the four speed targets (benchmarks/targets.py)
# 0. the test suite (python -m pytest -n $PYTEST_WORKERS; its summary line goes in the results);
# 1. COD scoring, ResNet-18 on CIFAR-shaped images: kept outputs vs two passes vs PyTorch (CUDA
#    when torch sees a GPU), at config.precision.score 'highest' (the default) and 'default';
# 2. the TOD train step vs PyTorch, as configured and without deterministic kernels;
# 3. one CIFAR-10-shaped cycle (50,000 synthetic images, 1 epoch): time split, peak device
#    memory, the protocol estimate;  4. precision: COD's query, accuracy and time at 'default'
#    (TF32) against 'highest' on digits;  5. determinism: a run stopped and resumed in a new
#    process against the uninterrupted run, with and without deterministic kernels;  6. the
#    README's main digits run, wall time and accuracies. Every line is JSON and names its device.
# Python: $PYTHON, else the python3 on PATH. PyTorch lines need torch (the `bench` extra);
# without it they say "skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-full}"
PY="${PYTHON:-python3}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX, PyTorch and test workers share the GPU.
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=$("$PY" -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
OUT="${OUT_FILE:-benchmarks/results/${DEVICE}.jsonl}"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
run() { "$PY" "$@" 2>/dev/null | grep '^{' | tee -a "$OUT"; }
WORKDIR=$(mktemp -d)
trap 'rm -rf "$WORKDIR"' EXIT

if [ "$MODE" = targets ]; then
  run benchmarks/targets.py
  echo "wrote $OUT" >&2
  exit 0
fi
if [ "$MODE" = smoke ]; then
  run benchmarks/score_benchmark.py --smoke
  run benchmarks/train_benchmark.py --smoke
  run benchmarks/cycle_benchmark.py --smoke --cycles=1
  run benchmarks/precision_benchmark.py --smoke --mode=tf32
  run benchmarks/determinism_check.py --smoke
  DIGITS=(--config.num_cycles=1 --config.num_epochs=1)
else
  START=$(date +%s.%N)
  set +e
  "$PY" -m pytest -n "${PYTEST_WORKERS:-8}" -p no:cacheprovider > "$WORKDIR/pytest.log" 2>&1
  STATUS=$?
  set -e
  "$PY" - "$WORKDIR/pytest.log" "$START" "$STATUS" <<'PY' | tee -a "$OUT"
import sys, time
sys.path.insert(0, 'benchmarks')
import bench_utils
log = open(sys.argv[1]).read().strip().splitlines()
failed = [l for l in log if l.startswith(('FAILED', 'ERROR'))]
bench_utils.emit({'impl': 'pytest', 'summary': log[-1] if log else '', 'exit_code': int(sys.argv[3]),
                  'failed': failed, 'wall_seconds': time.time() - float(sys.argv[2])})
PY
  run benchmarks/score_benchmark.py --pools=16384 --chunks=1024 --repeats=3
  run benchmarks/score_benchmark.py --pools=16384 --chunks=1024 --repeats=3 --impl=jax \
      --score_precision=default
  run benchmarks/train_benchmark.py --batch=128 --steps=20
  run benchmarks/train_benchmark.py --batch=128 --steps=20 --impl=jax \
      --config.deterministic=False
  run benchmarks/cycle_benchmark.py --config=configs/cifar10.py --synthetic_cifar=50000 \
      --config.num_epochs=1 --cycles=1 --protocol_estimate
  run benchmarks/precision_benchmark.py --mode=tf32 --seeds=0
  run benchmarks/determinism_check.py
  run benchmarks/determinism_check.py --config.deterministic=False
  DIGITS=()
fi
START=$(date +%s.%N)
"$PY" -m tod_jax.main --config=configs/digits.py --workdir="$WORKDIR/digits" \
    --config.progress_bar=False --config.tensorboard=False "${DIGITS[@]}" 2>/dev/null
"$PY" - "$WORKDIR/digits" "$START" <<'PY' | tee -a "$OUT"
import json, sys, time
sys.path.insert(0, 'benchmarks')
import bench_utils
from tod_jax import rundir
records = rundir.read_metrics(sys.argv[1])
bench_utils.emit({'impl': 'tod_jax_digits_run', 'cycles': len(records),
                  'wall_seconds': time.time() - float(sys.argv[2]),
                  'test_accuracy': [r['test_accuracy'] for r in records]})
PY
echo "wrote $OUT" >&2
