#!/usr/bin/env bash
# The accelerator benchmark suite, one command, about 6 minutes on one GPU:
#   bash benchmarks/gpu_suite.sh          # on a GPU (or TPU): writes benchmarks/results/<device>.jsonl
#   bash benchmarks/gpu_suite.sh smoke    # tiny sizes on any machine (the test suite runs this)
# 1. COD scoring, ResNet-18 on CIFAR-shaped images: kept outputs vs two passes vs PyTorch (CUDA
#    when torch sees a GPU);  2. the TOD train step vs PyTorch;  3. one CIFAR-10-shaped cycle
#    (50,000 synthetic images, 1 epoch) with its time split and peak device memory;  4. the
#    README's digits run, wall time and accuracies. Every line is JSON and names its device.
# PyTorch lines need `pip install -e ".[bench]"` (torch==2.13.0; CPU build here, CUDA wheels
# on a GPU machine); without torch they say "skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-full}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in one invocation.
export PYTHONUNBUFFERED=1
DEVICE=$(python -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
OUT="${OUT_FILE:-benchmarks/results/${DEVICE}.jsonl}"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
run() { python "$@" 2>/dev/null | grep '^{' | tee -a "$OUT"; }
WORKDIR=$(mktemp -d)
trap 'rm -rf "$WORKDIR"' EXIT

if [ "$MODE" = smoke ]; then
  run benchmarks/score_benchmark.py --smoke
  run benchmarks/train_benchmark.py --smoke
  run benchmarks/cycle_benchmark.py --smoke --cycles=1
  DIGITS=(--config.num_cycles=1 --config.num_epochs=1)
else
  run benchmarks/score_benchmark.py --pools=16384 --chunks=1024 --repeats=3
  run benchmarks/train_benchmark.py --batch=128 --steps=20
  run benchmarks/cycle_benchmark.py --config=configs/cifar10.py --synthetic_cifar=50000 \
      --config.num_epochs=1 --cycles=1 --protocol_estimate
  DIGITS=()
fi
START=$(date +%s.%N)
python -m tod_jax.main --config=configs/digits.py --workdir="$WORKDIR/digits" \
    --config.progress_bar=False --config.tensorboard=False "${DIGITS[@]}" 2>/dev/null
python - "$WORKDIR/digits" "$START" <<'PY' | tee -a "$OUT"
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
