#!/usr/bin/env bash
# GPU check for the CUDA-graph training step (issue 6), one short script for a GPU lease. It stops
# itself within about 4 minutes (GPU_CHECK_BUDGET_S, default 215 s of steps, plus set-up); expected
# about 2.5 minutes on an H100. Every step runs under `timeout` and the next step runs whatever
# happened; summary.log says what each step did.
#   (a) tests/test_cuda.py (graph step == eager step, fit through the graph, fallbacks) and tests/test_step.py;
#   (b) benchmarks/bench_train.py --device cuda --pairs 1 --cuda-graphs both: assignment loop, engine with
#       the CUDA graph, engine with the eager step, Model A and B, side by side;
#   (c) the full lr_sweep preset (3 runs x 10 epochs, model_b), headless, --device cuda, timed.
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]
#   DATA_DIR   folder with the four MNIST IDX files (.gz is fine), inside the copy of the repo
#   WHEEL_DIR  optional folder of wheels to install first (into /tmp/site) when the GPU machine's
#              python lacks pydantic / platformdirs; default: .whl if it exists
# Logs go to $OUT (if set) or ./gpu-check-logs: summary.log, tests.log, bench.log, bench.json, lr_sweep.log.
# Preparing .gpu-data and .whl: see benchmarks/gpu_check.sh; run with carry [".gpu-data", ".whl"]:
#   bash benchmarks/gpu_check.sh .gpu-data .whl
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
T0=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-215}
# seconds for the next step: at most $1, and no more than what is left of the budget (at least 10)
cap() { local want=$1 left=$((BUDGET - (SECONDS - T0))); [ "$left" -lt "$want" ] && want=$left; [ "$want" -lt 10 ] && want=10; echo "$want"; }
verdict() { case $1 in 0) echo "ok";; 124|137) echo "TIMED OUT";; *) echo "FAILED (exit $1)";; esac; }

if ! "$PY" -c "import pydantic, platformdirs" 2>/dev/null; then
  if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl \
      >"$LOGS/pip.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
say "== $(date -u +%FT%TZ) $(timeout 60 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -n 1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
"$PY" -c "import pydantic, platformdirs, pytest" >/dev/null 2>&1 || say "WARNING: pydantic / platformdirs / pytest missing: $("$PY" -c 'import pydantic, platformdirs, pytest' 2>&1 | tail -n 1)"

# (a) tests: test_cuda.py must run, not skip
start=$SECONDS
timeout -k 5 "$(cap 80)" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_step.py >"$LOGS/tests.log" 2>&1
rc_tests=$?
say "(a) tests: $(verdict $rc_tests) in $((SECONDS - start)) s; $(tail -n 1 "$LOGS/tests.log")"
grep -E "^(FAILED|ERROR|SKIPPED)" "$LOGS/tests.log" | head -n 20 | tee -a "$SUMMARY"

# (b) benchmark: assignment loop vs engine (CUDA graph) vs engine (eager step), one pair each
start=$SECONDS
timeout -k 5 "$(cap 110)" "$PY" benchmarks/bench_train.py --device cuda --pairs 1 --cuda-graphs both \
  --data-dir "$DATA_DIR" --json "$LOGS/bench.json" >"$LOGS/bench.log" 2>&1
rc_bench=$?
say "(b) bench_train.py --device cuda --cuda-graphs both: $(verdict $rc_bench) in $((SECONDS - start)) s"
grep -E "^  (model_|peak)|capture failed|FAILED" "$LOGS/bench.log" | tee -a "$SUMMARY"
[ "$rc_bench" = 0 ] || tail -n 30 "$LOGS/bench.log" | tee -a "$SUMMARY"

# (c) the full lr_sweep, headless, timed
runs=$(mktemp -d)
limit=$(cap 120)
start=$("$PY" -c "import time; print(time.time())")
timeout -k 5 "$limit" "$PY" -m tuitrain --preset lr_sweep --no-ui --device cuda --data-dir "$DATA_DIR" --runs-dir "$runs" >"$LOGS/lr_sweep.log" 2>&1
rc_sweep=$?
end=$("$PY" -c "import time; print(time.time())")
say "(c) lr_sweep (3 runs x 10 epochs, model_b) --device cuda: $(verdict $rc_sweep), wall $("$PY" -c "print(round($end - $start, 1))") s (limit $limit s; 78 s before the CUDA graph)"
grep -iE "capture failed|^Run |epoch 10/10" "$LOGS/lr_sweep.log" | tee -a "$SUMMARY"
tail -n 8 "$LOGS/lr_sweep.log" | tee -a "$SUMMARY"

say "== done in $((SECONDS - T0)) s: tests $(verdict $rc_tests), bench $(verdict $rc_bench), lr_sweep $(verdict $rc_sweep)"
[ "$rc_tests" = 0 ] && [ "$rc_bench" = 0 ] && [ "$rc_sweep" = 0 ]
