#!/usr/bin/env bash
# GPU check, one short script for a GPU lease (about 5 minutes on an H100/H200). Every step runs under
# `timeout`; the next step runs whatever happened; summary.log says what each step did.
#   (a) tests/engine/test_cuda.py (graph == eager step for Model A/B, ResNet18, AlexNet with dropout, bf16,
#       the GPU panel's data source) and tests/unit/test_step.py, tests/unit/test_gpu.py;
#   (b) benchmarks/bench_step.py: ResNet18 / AlexNet at batch 64, captured vs eager, bf16 vs fp32,
#       channels-last vs NCHW, with the panel's sampler vs without, side by side in one process;
#   (c) the full resnet_vs_alexnet preset (2 x 10 epochs, batch 64), headless, timed, fp32 then bf16;
#   (d) a text capture of the run screen with the GPU panel (benchmarks/gpu_panel_capture.py).
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]
#   DATA_DIR   folder with the four MNIST IDX files (.gz is fine)
#   WHEEL_DIR  optional folder of wheels installed first (into /tmp/site) when the GPU machine's python lacks
#              pydantic / platformdirs / textual / torchvision; default: .whl if it exists
# Logs go to $OUT (if set) or ./gpu-check-logs.
set -u
DATA_DIR=${1:?usage: benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]}
WHEEL_DIR=${2:-.whl}
LOGS=${OUT:-./gpu-check-logs}
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TUITRAIN_CACHE_DIR=$(mktemp -d)
unset TUITRAIN_CUDA_GRAPHS
SUMMARY=$LOGS/summary.log
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
verdict() { case $1 in 0) echo "ok";; 124|137) echo "TIMED OUT";; *) echo "FAILED (exit $1)";; esac; }
now() { "$PY" -c "import time; print(time.time())"; }
T0=$SECONDS

if ! "$PY" -c "import pydantic, platformdirs, textual, torchvision" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl \
    >"$LOGS/pip.log" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
say "== $(date -u +%FT%TZ) $(timeout 60 "$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -n 1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
"$PY" -c "import pynvml; print('nvidia-ml-py', pynvml.__file__)" 2>&1 | tail -n 1 | tee -a "$SUMMARY"

# (a) tests: test_cuda.py must run, not skip
start=$SECONDS
timeout -k 5 110 "$PY" -m pytest -q -rs -p no:cacheprovider tests/engine/test_cuda.py tests/unit/test_step.py tests/unit/test_gpu.py >"$LOGS/tests.log" 2>&1
rc_tests=$?
say "(a) tests: $(verdict $rc_tests) in $((SECONDS - start)) s; $(tail -n 1 "$LOGS/tests.log")"
grep -E "^(FAILED|ERROR|SKIPPED)" "$LOGS/tests.log" | head -n 20 | tee -a "$SUMMARY"

# (b) step benchmark
start=$SECONDS
timeout -k 5 100 "$PY" benchmarks/bench_step.py --data-dir "$DATA_DIR" --seconds 1.0 >"$LOGS/bench.log" 2>&1
rc_bench=$?
say "(b) bench_step.py: $(verdict $rc_bench) in $((SECONDS - start)) s"
cat "$LOGS/bench.log" | tail -n 20 | tee -a "$SUMMARY"

# (c) the full preset, fp32 then bf16 (same seeds)
for precision in fp32 bf16; do
  runs=$(mktemp -d)
  start=$(now)
  timeout -k 5 85 "$PY" -m tuitrain --preset resnet_vs_alexnet --no-ui --device cuda --precision $precision \
    --data-dir "$DATA_DIR" --runs-dir "$runs" >"$LOGS/preset_$precision.log" 2>&1
  rc=$?
  end=$(now)
  say "(c) resnet_vs_alexnet --precision $precision: $(verdict $rc), wall $("$PY" -c "print(round($end - $start, 1))") s"
  tail -n 30 "$LOGS/preset_$precision.log" | tee -a "$SUMMARY"
  cp -r "$runs" "$LOGS/runs_$precision" 2>/dev/null
done
# (d) a capture of the run screen with its GPU panel, training for real (Pilot, headless)
start=$SECONDS
timeout -k 5 45 "$PY" benchmarks/gpu_panel_capture.py "$DATA_DIR" "$LOGS" >"$LOGS/capture.log" 2>&1
say "(d) run screen capture: $(verdict $?) in $((SECONDS - start)) s"
head -n 12 "$LOGS/capture.log" | tee -a "$SUMMARY"

say "== done in $((SECONDS - T0)) s"
