#!/usr/bin/env bash
# Ray's overhead on one machine: a 3-run sweep through `--executor ray` on an already-started local cluster
# against `--executor local` with the same --jobs, alternated; Ray's start-up (ray start --head) timed apart.
#   bash benchmarks/ray_overhead.sh DATA_DIR [ROUNDS] [SUBSET]   (SUBSET: training images per run, default all)
# Target: ray / local <= 1.25. The cluster listens on 127.0.0.2 (loopback only) and is stopped at the end.
set -euo pipefail
data=${1:?usage: ray_overhead.sh DATA_DIR [ROUNDS]}
rounds=${2:-2}
subset=${3:+--subset $3}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/tuitrain-ray-bench.XXXXXX)
export RAY_TMPDIR=$tmp/ray RAY_AUTH_MODE=token TUITRAIN_RAY_NODE_IP=127.0.0.2 TUITRAIN_CACHE_DIR=$tmp/cache
export TUITRAIN_CPU_THREADS=1 PYTHONPATH=$here
mkdir -p "$RAY_TMPDIR"
port=6391
trap 'ray stop --force >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
start=$(date +%s.%N)
ray start --head --node-ip-address=127.0.0.2 --port=$port --num-cpus=2 --include-dashboard=false \
  --temp-dir="$RAY_TMPDIR" >/dev/null
echo "ray start --head: $(echo "$(date +%s.%N) - $start" | bc | cut -c1-5) s"
sweep="--preset lr_sweep --epochs 1 $subset --jobs 2 --no-ui --data-dir $data"
echo "lr_sweep --epochs 1 ${subset:-(all 60,000 images)} --jobs 2, TUITRAIN_CPU_THREADS=1, $rounds alternated rounds"
for round in $(seq "$rounds"); do
  for executor in local ray; do
    extra=""
    [ "$executor" = ray ] && extra="--executor ray --ray-address 127.0.0.2:$port"
    start=$(date +%s.%N)
    python -m tuitrain $sweep --runs-dir "$tmp/runs-$executor-$round" $extra >/dev/null
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    echo "round $round  --executor $executor  wall ${wall:0:5} s"
    eval "wall_${executor}_$round=$wall"
  done
  eval "echo \"round $round  ray / local: \$(echo \"scale=2; \$wall_ray_$round / \$wall_local_$round\" | bc)x (target <= 1.25x)\""
done
