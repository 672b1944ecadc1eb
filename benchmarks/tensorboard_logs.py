"""Benchmark: TensorBoard logs read by tuitrain: a 100,000-step log opened by `tuitrain compare --no-ui`, and the
time from a live writer's flush to the new point seen by a watcher.

Usage (from the repository root):

    python benchmarks/tensorboard_logs.py [--steps 100000] [--points 10]

1. A log of --steps scalar steps (train/loss every step, val/loss every 1,000), written by torch's SummaryWriter,
   is compared by `python -m tuitrain compare --no-ui LOGDIR` in a fresh process: its wall time, start-up included
   (target: under 2 s), and the time tuitrain takes to read the log in this process.
2. A SummaryWriter writes a point and flushes, --points times, while a tuitrain Follower watches the folder (as
   `tuitrain watch LOGDIR` does, polling every 0.5 s): the time from each flush to the event that carries that
   point (target: under 2 s).

It is a benchmark, not a test: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from tuitrain.core.events import BatchLosses, Event  # noqa: E402
from tuitrain.follow import Follower  # noqa: E402
from tuitrain.tblogs import read_log_folder  # noqa: E402


def big_log(folder: Path, steps: int) -> None:
    writer = SummaryWriter(str(folder), max_queue=1000)
    for step in range(steps):
        writer.add_scalar("train/loss", 2.3 * math.exp(-step / (steps / 5)), step)
        if step % 1000 == 0:
            writer.add_scalar("val/loss", 2.4 * math.exp(-step / (steps / 5)), step)
    writer.close()


def open_times(folder: Path, steps: int) -> None:
    began = time.perf_counter()
    record = read_log_folder(folder)
    read_s = time.perf_counter() - began
    assert len(record.series["train/loss"]) == steps
    size = sum(p.stat().st_size for p in folder.iterdir())
    walls = []
    for _ in range(3):
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "tuitrain", "compare", "--no-ui", str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        walls.append(time.perf_counter() - began)
    assert "Final train loss" in result.stdout
    print(f"{steps:,}-step TensorBoard log ({size / 1e6:.1f} MB):")
    print(f"  read by tuitrain in this process: {read_s:.2f} s")
    print(
        f"  tuitrain compare --no-ui, a fresh process: {statistics.median(walls):.2f} s median "
        f"({', '.join(f'{w:.2f}' for w in walls)})"
    )


def live_latency(folder: Path, points: int) -> None:
    writer = SummaryWriter(str(folder))
    writer.add_scalar("train/loss", 1.0, 0)
    writer.flush()
    follower = Follower(folder)
    seen: dict[int, float] = {}

    def sink(event: Event) -> None:
        if isinstance(event, BatchLosses):
            now = time.perf_counter()
            for step in range(event.first_step, event.first_step + len(event.losses)):
                seen.setdefault(step, now)

    watcher = threading.Thread(target=follower.run, args=(sink,), daemon=True)
    watcher.start()
    flushed: dict[int, float] = {}
    for step in range(1, points + 1):
        time.sleep(0.73)  # not in step with the watcher's polls
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.flush()
        flushed[step] = time.perf_counter()
    deadline = time.perf_counter() + 10
    while len(seen) < points + 1 and time.perf_counter() < deadline:
        time.sleep(0.05)
    follower.stop()
    writer.close()
    latencies = [seen[s] - flushed[s] for s in flushed if s in seen]
    print(f"Live event file, {points} points, watcher polling every {follower.poll_s} s:")
    print(
        f"  flush -> point seen: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
        f"({len(latencies)}/{points} seen)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big_log(Path(tmp) / "big", args.steps)
        open_times(Path(tmp) / "big", args.steps)
        live_latency(Path(tmp) / "live", args.points)


if __name__ == "__main__":
    main()
