"""Stopping a detached run from another terminal: from the `tuitrain stop` command to the run file saying interrupted.

    python benchmarks/stop_latency.py [--data-dir DIR] [--repeats 5] [--jobs 1 2]

For each --jobs value and repeat: `tuitrain --preset P --detach` a two-run sweep of a small model (Model A, batch
64: a batch takes a few ms on a CPU, far under 100 ms), wait until both runs train, then start `tuitrain stop FOLDER`
(a fresh interpreter, as a person would) and poll the run files every 2 ms until each says interrupted. Prints, per
case, the batch time (from the run files), the time from starting the command to its request file appearing (the
command's Python start-up), from there to the last run file saying interrupted (the trainer's part), and the sum.
Target: the sum under 1 s. Without --data-dir, a synthetic MNIST (IDX files) is written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import write_mnist_dir  # noqa: E402
from tuitrain.core.errors import RecordError  # noqa: E402
from tuitrain.records import RunRecord, read_record  # noqa: E402
from tuitrain.remote_control import REQUEST_PREFIX, read_state  # noqa: E402

PRESET = """
name = "stop_latency"
title = "Two small runs to stop"
description = "Model A, batch 64, many epochs: stopped long before they end."

[defaults]
model = "model_a"
epochs = 1000
batch_size = 64
lr = 0.003
log_every = 8
device = "cpu"

[grid]
activation = ["relu", "tanh"]
"""
TARGET_S = 1.0


def record_or_none(path: Path) -> RunRecord | None:
    try:
        return read_record(path)
    except (RecordError, OSError):
        return None


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_stop(preset: Path, data_dir: Path, runs: Path, jobs: int, env: dict[str, str]) -> tuple[float, float, float]:
    """(batch seconds, command start to its request file, request file to the run files saying interrupted) for one
    detached sweep."""
    tuitrain = [sys.executable, "-m", "tuitrain"]
    out = subprocess.run(
        [*tuitrain, "--preset", str(preset), "--detach", "--data-dir", str(data_dir), "--runs-dir", str(runs)]
        + ["--jobs", str(jobs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    folder = Path(next(line for line in out.splitlines() if line.startswith("Run folder:")).split(":", 1)[1].strip())
    files = [folder / "01-activation=relu.json", folder / "02-activation=tanh.json"]
    wanted = files if jobs > 1 else files[:1]

    def training() -> bool:
        records = [record_or_none(p) for p in wanted]
        return read_state(folder) is not None and all(r is not None and len(r.epochs) >= 2 for r in records)

    wait_for(training, "the runs to train")
    records = [r for p in wanted if (r := record_or_none(p)) is not None]
    batch_s = statistics.median(
        (e.duration_s - e.eval_s) / max(1, r.batches_per_epoch or 1) for r in records for e in r.epochs[-2:]
    )
    started = time.perf_counter()
    command = subprocess.Popen(
        [*tuitrain, "stop", str(folder), "--wait", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    requested = None
    seen: dict[Path, int] = {}  # each file's mtime when last parsed: parsing a long record every 2 ms would slow
    status: dict[Path, str | None] = {}  # the trainer down on a small machine
    while True:
        if requested is None and any(p.name.startswith(REQUEST_PREFIX) for p in folder.iterdir()):
            requested = time.perf_counter()
        for path in wanted:
            mtime = path.stat().st_mtime_ns
            if seen.get(path) != mtime:
                seen[path] = mtime
                status[path] = r.status if (r := record_or_none(path)) is not None else None
        if all(status.get(p) == "interrupted" for p in wanted):
            break
        time.sleep(0.002)
    ended = time.perf_counter()
    command.wait(timeout=60)
    wait_for(lambda: read_state(folder) is None, "the detached process to end")
    requested = requested if requested is not None else started
    return batch_s, requested - started, ended - requested


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="an MNIST folder (default: a synthetic one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuitrain-stop-latency-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = args.data_dir or write_mnist_dir(tmp / "mnist", n_train=4096, n_test=256)
        preset = tmp / "stop_latency.toml"
        preset.write_text(PRESET, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp / "cache")}
        header = f"{'case':<22} {'batch':>7} {'command->request':>17} {'request->file':>14} {'command->file':>14}"
        print(f"{header}   (median/max of {args.repeats})")
        worst = 0.0
        for jobs in args.jobs:
            results = [one_stop(preset, data_dir, tmp / "runs", jobs, env) for _ in range(args.repeats)]
            batch = [r[0] for r in results]
            columns = [[r[1] for r in results], [r[2] for r in results], [r[1] + r[2] for r in results]]
            worst = max(worst, *columns[2])
            case = "--jobs 1 (in process)" if jobs == 1 else f"--jobs {jobs} (workers)"
            figures = " ".join(f"{statistics.median(c):8.3f}/{max(c):.3f}s" for c in columns)
            print(f"{case:<22} {statistics.median(batch) * 1000:5.1f}ms {figures}")
        verdict = "within" if worst < TARGET_S else "OVER"
        print(f"worst command->file {worst:.3f} s: {verdict} the {TARGET_S:.0f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
