#!/usr/bin/env bash
# GPU check, one short script for a GPU lease (expected 3-4 minutes on an H100; at most about 7 with every timeout hit):
#   (a) the tests that exercise CUDA (tests/test_cuda.py) plus the engine and perf tests, on the GPU machine;
#   (b) benchmarks/bench_train.py --device cuda --pairs 2 (engine vs the assignment loop on the GPU);
#   (c) the full lr_sweep preset, headless, on real MNIST with --device cuda, timed, beside its estimate.
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]
#   DATA_DIR   folder with the four MNIST IDX files (.gz is fine), inside the copy of the repo
#   WHEEL_DIR  optional folder of wheels to install first (into /tmp/site) when the GPU machine's
#              python lacks pydantic / platformdirs; default: .whl if it exists
# Logs go to $OUT (if set) or ./gpu-check-logs: tests.log, bench.log, bench.json, lr_sweep.log, summary.log.
#
# Preparing a lease from the main checkout (both folders are git-ignored via .git/info/exclude):
#   mkdir -p .gpu-data .whl && cp /work/shared/data/mnist/*.gz .gpu-data/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     platformdirs==4.14.8 typing_extensions==4.16.0
#   then run with carry [".gpu-data", ".whl"]:  bash benchmarks/gpu_check.sh .gpu-data .whl
set -u
DATA_DIR=${1:?usage: benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]}
WHEEL_DIR=${2:-.whl}
LOGS=${OUT:-./gpu-check-logs}
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TUITRAIN_CACHE_DIR=$(mktemp -d)  # a fresh calibration: the estimate is measured on this GPU
SUMMARY=$LOGS/summary.log
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

if ! "$PY" -c "import pydantic, platformdirs" 2>/dev/null; then
  if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
say "== $(date -u +%FT%TZ) $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"

# (a) tests: test_cuda.py must run (not skip) here; the CPU-side engine tests run too.
start=$SECONDS
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_engine.py tests/test_perf.py >"$LOGS/tests.log" 2>&1
rc_tests=$?
say "(a) tests: exit $rc_tests in $((SECONDS - start)) s; $(tail -n 1 "$LOGS/tests.log")"
grep -q "skipped" "$LOGS/tests.log" && grep -i "skip" "$LOGS/tests.log" | tee -a "$SUMMARY"

# (b) benchmark on the GPU
start=$SECONDS
timeout 200 "$PY" benchmarks/bench_train.py --device cuda --pairs 2 --data-dir "$DATA_DIR" --json "$LOGS/bench.json" >"$LOGS/bench.log" 2>&1
rc_bench=$?
say "(b) bench_train.py --device cuda: exit $rc_bench in $((SECONDS - start)) s"
tee -a "$SUMMARY" <"$LOGS/bench.log" | tail -n 8

# (c) the full lr_sweep, headless, timed, beside the estimate for it
"$PY" -m tuitrain --list-presets --device cuda >"$LOGS/list_presets.log" 2>&1
say "(c) estimates on this GPU:"; tee -a "$SUMMARY" <"$LOGS/list_presets.log"
start=$("$PY" -c "import time; print(time.time())")
timeout 150 "$PY" -m tuitrain --preset lr_sweep --no-ui --device cuda --data-dir "$DATA_DIR" --runs-dir "$(mktemp -d)" >"$LOGS/lr_sweep.log" 2>&1
rc_sweep=$?
end=$("$PY" -c "import time; print(time.time())")
say "(c) lr_sweep (3 runs x 10 epochs) --device cuda: exit $rc_sweep, wall $("$PY" -c "print(round($end - $start, 1))") s"
grep -E "^Run |epoch 10/10" "$LOGS/lr_sweep.log" | tee -a "$SUMMARY"
tail -n 8 "$LOGS/lr_sweep.log" | tee -a "$SUMMARY"

say "== done: tests $rc_tests, bench $rc_bench, lr_sweep $rc_sweep"
[ "$rc_tests" = 0 ] && [ "$rc_bench" = 0 ] && [ "$rc_sweep" = 0 ]
