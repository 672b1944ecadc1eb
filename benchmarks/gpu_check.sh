#!/usr/bin/env bash
# GPU check, one script for one GPU lease: at most BUDGET_S (default 340 s, under 6 minutes) on an H100/H200.
# Every step runs under `timeout`, capped by what is left of the budget (a step with under 10 s left is skipped and
# says so); the next step runs whatever happened; summary.log says what each step did.
#   (a) tests: tests/engine/test_cuda.py (graph == eager step for Model A/B, ResNet18, AlexNet, bf16, the GPU panel's
#       data source), tests/engine/test_fused.py (fused runs' losses == each run alone on CUDA, graph and eager,
#       with a run stopped midway), tests/unit/test_step.py, tests/unit/test_gpu.py;
#   (b) issue 28's targets: S = the wall of a bare `python -c "import torch; torch.zeros(1).cuda()"`, then each
#       preset headless with its default jobs, real MNIST, full settings, wall from start to exit and its gap to S:
#       one Model B run (target S + 4 s), lr_sweep (S + 5 s), activations (S + 5 s), eight seeds (S + 6 s),
#       resnet_vs_alexnet fp32 (at most 40 s: --jobs auto trains the two side by side in one process, a CUDA stream
#       each, executors.threads); each with its summary table (accuracies);
#   (a') the CUDA tests of runs side by side (tests/engine/test_side_by_side.py -m cuda: each run's dropout from its
#       own generator, ResNet18 beside AlexNet through --jobs auto);
#   (c) the fused-vs-alone loss comparison on CUDA (benchmarks/fused_vs_alone.py: lr_sweep, one epoch of full MNIST,
#       the second run stopped after 300 batches; then eight seeds), with the time each way;
#   (d) the phase table of lr_sweep on CUDA (benchmarks/phases.py, one epoch): where the wall goes;
#   (g) last, if the budget still holds it: resnet_vs_alexnet fp32 with --jobs 1 (the two one after another, the
#       separate path), against (b)'s side-by-side wall.
# With GPU_CHECK_MORE=1 (another lease: these do not fit in the same 6 minutes) it also runs the earlier checks:
# benchmarks/bench_step.py (captured vs eager, bf16 vs fp32, channels-last), resnet_vs_alexnet bf16 and a text
# capture of the run screen with its GPU panel (benchmarks/gpu_panel_capture.py).
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]
#   DATA_DIR   folder with the four MNIST IDX files (.gz is fine)
#   WHEEL_DIR  optional folder of wheels installed first (into /tmp/site) when the GPU machine's python lacks
#              pydantic / platformdirs / textual / torchvision; default: .whl if it exists
# Logs go to $OUT (if set) or ./gpu-check-logs. CPU-safe parts: DRY_RUN=1 prints the commands without running them.
set -u
DATA_DIR=${1:?usage: benchmarks/gpu_check.sh DATA_DIR [WHEEL_DIR]}
WHEEL_DIR=${2:-.whl}
LOGS=${OUT:-./gpu-check-logs}
BUDGET_S=${BUDGET_S:-340}
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TUITRAIN_CACHE_DIR=$(mktemp -d)
unset TUITRAIN_CUDA_GRAPHS
SUMMARY=$LOGS/summary.log
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
verdict() { case $1 in 0) echo "ok";; 124|137) echo "TIMED OUT";; *) echo "FAILED (exit $1)";; esac; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
T0=$SECONDS

# run_step NAME MAX_S LOG COMMAND...: COMMAND under timeout (MAX_S, capped by the budget left); sets RC and WALL
run_step() {
  local name=$1 max=$2 log=$3
  shift 3
  local left=$((BUDGET_S - (SECONDS - T0)))
  if [ "$left" -lt 10 ]; then
    say "$name: SKIPPED (budget of $BUDGET_S s spent)"
    RC=125 WALL=nan
    return
  fi
  [ "$max" -gt "$left" ] && max=$left
  if [ -n "${DRY_RUN:-}" ]; then
    say "$name: would run (timeout $max s): $*"
    RC=0 WALL=0
    return
  fi
  local start end
  start=$(now)
  timeout -k 5 "$max" "$@" >"$log" 2>&1
  RC=$?
  end=$(now)
  WALL=$(seconds "$start" "$end")
}

# target NAME WALL LIMIT: "met" or "MISSED" against a limit in seconds
target() { awk -v w="$2" -v l="$3" -v n="$1" 'BEGIN { if (w == "nan") print n ": not measured"; else printf "%s: %.1f s against at most %.1f s: %s\n", n, w, l, (w <= l ? "met" : "MISSED") }'; }

if [ -z "${DRY_RUN:-}" ] && ! "$PY" -c "import pydantic, platformdirs, textual, torchvision" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl \
    >"$LOGS/pip.log" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${DRY_RUN:-}" ]; then
  say "== $(date -u +%FT%TZ) $(timeout 60 "$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -n 1)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
fi

# (b) first, on a cold machine as the issue measured: S, then the presets (wall from start to exit)
run_step "(b) S = bare torch + CUDA context" 60 "$LOGS/bare.log" "$PY" -c "import torch; torch.zeros(1).cuda()"
S=$WALL
say "(b) S: $(verdict $RC), wall $S s"
preset() {  # preset NAME LIMIT_EXPR MAX_S ARGS...: one preset, timed, its gap to S and its target
  local name=$1 limit=$2 max=$3
  shift 3
  local runs
  runs=$(mktemp -d)
  run_step "(b) $name" "$max" "$LOGS/preset_${name}.log" "$PY" -m tuitrain "$@" --no-ui --data-dir "$DATA_DIR" --runs-dir "$runs"
  say "(b) $name: $(verdict $RC), wall $WALL s, S + $(awk -v w="$WALL" -v s="$S" 'BEGIN { printf "%.1f", w - s }') s"
  say "    $(target "$name" "$WALL" "$(awk -v s="$S" "BEGIN { print $limit }")")"
  [ -z "${DRY_RUN:-}" ] && grep -E "^(  |Run files|run )" "$LOGS/preset_${name}.log" | grep -v "^Run files" | tail -n 10 | tee -a "$SUMMARY"
  cp -r "$runs" "$LOGS/runs_$name" 2>/dev/null
}
preset model_b_run "s + 4" 45 --preset lr_sweep --lr 0.001
preset lr_sweep "s + 5" 45 --preset lr_sweep
preset activations "s + 5" 45 --preset activations
preset eight_seeds "s + 6" 60 --preset lr_sweep --lr 0.001 --seeds 0,1,2,3,4,5,6,7
preset resnet_vs_alexnet_fp32 "40" 85 --preset resnet_vs_alexnet --precision fp32
SIDE_BY_SIDE_WALL=$WALL
[ -z "${DRY_RUN:-}" ] && grep -E "at a time" "$LOGS/preset_resnet_vs_alexnet_fp32.log" | head -n 1 | sed 's/^/    /' | tee -a "$SUMMARY"

# (a) tests: test_cuda.py and the CUDA tests of test_fused.py must run, not skip
run_step "(a) tests" 90 "$LOGS/tests.log" "$PY" -m pytest -q -rs -p no:cacheprovider tests/engine/test_cuda.py \
  tests/engine/test_fused.py tests/unit/test_step.py tests/unit/test_gpu.py
say "(a) tests: $(verdict $RC) in $WALL s; $([ -z "${DRY_RUN:-}" ] && tail -n 1 "$LOGS/tests.log")"
[ -z "${DRY_RUN:-}" ] && grep -E "^(FAILED|ERROR|SKIPPED)" "$LOGS/tests.log" | head -n 20 | tee -a "$SUMMARY"
run_step "(a') side-by-side tests" 40 "$LOGS/tests_side_by_side.log" "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda \
  tests/engine/test_side_by_side.py
say "(a') side-by-side tests: $(verdict $RC) in $WALL s; $([ -z "${DRY_RUN:-}" ] && tail -n 1 "$LOGS/tests_side_by_side.log")"
[ -z "${DRY_RUN:-}" ] && grep -E "^(FAILED|ERROR|SKIPPED)" "$LOGS/tests_side_by_side.log" | head -n 5 | tee -a "$SUMMARY"

# (c) fused against alone on CUDA: losses side by side, times
run_step "(c) fused vs alone, lr_sweep" 40 "$LOGS/fused_lr_sweep.log" "$PY" benchmarks/fused_vs_alone.py \
  --data-dir "$DATA_DIR" --device cuda --sweep lr_sweep --stop-after 300
say "(c) fused vs alone, lr_sweep: $(verdict $RC) in $WALL s"
[ -z "${DRY_RUN:-}" ] && tail -n 6 "$LOGS/fused_lr_sweep.log" | tee -a "$SUMMARY"
run_step "(c) fused vs alone, eight seeds" 40 "$LOGS/fused_seeds.log" "$PY" benchmarks/fused_vs_alone.py \
  --data-dir "$DATA_DIR" --device cuda --sweep seeds
say "(c) fused vs alone, eight seeds: $(verdict $RC) in $WALL s"
[ -z "${DRY_RUN:-}" ] && tail -n 11 "$LOGS/fused_seeds.log" | tee -a "$SUMMARY"

# (d) the phase table on CUDA (and the CPU's, for the same invocation, if the budget allows)
run_step "(d) phases" 45 "$LOGS/phases.log" "$PY" benchmarks/phases.py --device cuda --jobs auto \
  --data-dir "$DATA_DIR" --logs "$LOGS/phases" -- --preset lr_sweep --epochs 1
say "(d) phases: $(verdict $RC) in $WALL s"
[ -z "${DRY_RUN:-}" ] && cat "$LOGS/phases.log" | tail -n 20 | tee -a "$SUMMARY"

# (g) the separate path for resnet_vs_alexnet: one run after the other (--jobs 1), against (b)'s side by side
preset resnet_vs_alexnet_fp32_separate "63.4" 75 --preset resnet_vs_alexnet --precision fp32 --jobs 1
say "(g) resnet_vs_alexnet fp32: side by side $SIDE_BY_SIDE_WALL s, one after another $WALL s$(awk -v a="$SIDE_BY_SIDE_WALL" -v b="$WALL" 'BEGIN { if (a != "nan" && b != "nan" && a > 0) printf " (%.2fx faster side by side)", b / a }')"

if [ -n "${GPU_CHECK_MORE:-}" ]; then
  run_step "(e) bench_step.py" 100 "$LOGS/bench.log" "$PY" benchmarks/bench_step.py --data-dir "$DATA_DIR" --seconds 1.0
  say "(e) bench_step.py: $(verdict $RC) in $WALL s"
  [ -z "${DRY_RUN:-}" ] && tail -n 20 "$LOGS/bench.log" | tee -a "$SUMMARY"
  preset resnet_vs_alexnet_bf16 "40" 85 --preset resnet_vs_alexnet --precision bf16
  run_step "(f) run screen capture" 45 "$LOGS/capture.log" "$PY" benchmarks/gpu_panel_capture.py "$DATA_DIR" "$LOGS"
  say "(f) run screen capture: $(verdict $RC) in $WALL s"
  [ -z "${DRY_RUN:-}" ] && head -n 12 "$LOGS/capture.log" | tee -a "$SUMMARY"
fi

say "== done in $((SECONDS - T0)) s (budget $BUDGET_S s)"
