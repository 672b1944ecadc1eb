"""The run store at scale: a million-step run, a thousand runs in one folder, and kill -9 while logging.

Usage (from the repository root):
    python benchmarks/run_store_scale.py million [--steps 1000000]
    python benchmarks/run_store_scale.py thousand [--runs 1000 --steps 1000]
    python benchmarks/run_store_scale.py kill9 [--kills 12]

million: a script logs `{"train/loss", "lr"}` floats for --steps steps as fast as it can (the logging loop's time),
then 10,000 more at a pace of about 2,000 steps/s, counting the bytes it hands to write() meanwhile (/proc/self/io
wchar); then times `tuitrain watch --no-ui` and `tuitrain compare --no-ui` of the finished run, each a fresh process.
thousand: --runs script runs of --steps steps in one folder; times the home screen's scan of the folder
(catalog.scan_runs without the series logs, as the home screen reads it) and `tuitrain compare --no-ui` of all of them.
kill9: a script logs steps and reports each step it has logged to its parent; the parent kills it with SIGKILL at a
random moment, --kills times; after each kill, every file must read and the series log must hold every step up to
the last one in a complete frame (no step before it lost). Prints one line per kill.
A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def written_bytes() -> int:
    """Bytes this process has handed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def timed(command: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr


def million(steps: int) -> None:
    import tuitrain

    folder = Path(tempfile.mkdtemp(prefix="tuitrain-million-"))
    run = tuitrain.init(project="million", name="1M steps", config={"lr": 0.1}, dir=folder)
    start = time.perf_counter()
    for step in range(steps):
        run.log({"train/loss": 1.0 / (step + 1), "lr": 0.1})
    loop_s = time.perf_counter() - start
    print(f"logging loop: {steps:,} steps x 2 metrics in {loop_s:.2f} s ({loop_s / steps * 1e6:.2f} µs/step)")
    before = written_bytes()
    paced = time.perf_counter()
    for i in range(10_000):
        run.log({"train/loss": 1.0 / (steps + i + 1), "lr": 0.1})
        if i % 100 == 99:  # about 2,000 steps/s
            wait = paced + (i + 1) / 2000 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    paced_s = time.perf_counter() - paced
    during = written_bytes() - before
    run.finish()
    print(
        f"last 10,000 steps at {10_000 / paced_s:,.0f} steps/s: {during:,} bytes written ({during / 1e6:.3f} MB), "
        "run file and series log together"
    )
    series = run.path.with_suffix(".series")
    print(f"files: {run.path.name} {run.path.stat().st_size:,} bytes, {series.name} {series.stat().st_size:,} bytes")
    for what, command in (
        ("watch --no-ui", [sys.executable, "-m", "tuitrain", "watch", "--no-ui", str(run.path)]),
        ("compare --no-ui", [sys.executable, "-m", "tuitrain", "compare", "--no-ui", str(run.path)]),
    ):
        seconds, rc, out = timed(command)
        print(f"tuitrain {what} of the finished run: {seconds:.2f} s (exit {rc}, {len(out.splitlines())} lines)")


def thousand(runs: int, steps: int) -> None:
    import tuitrain
    from tuitrain.catalog import scan_runs

    folder = Path(tempfile.mkdtemp(prefix="tuitrain-thousand-"))
    start = time.perf_counter()
    for i in range(runs):
        run = tuitrain.init(project="many", name=f"run {i}", config={"lr": 0.001 * (i + 1), "seed": i}, dir=folder)
        for step in range(steps):
            run.log({"train/loss": 1.0 / (step + 1) + i / runs, "lr": 0.1})
        run.log_epoch(val_loss=0.5 + (i % 97) / 100)
        run.finish()
    print(f"wrote {runs:,} runs of {steps:,} steps in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    listed = scan_runs(folder, series=False)
    scan_s = time.perf_counter() - start
    print(f"home screen's scan of the folder (catalog.scan_runs): {len(listed):,} runs in {scan_s:.2f} s")
    seconds, rc, out = timed([sys.executable, "-m", "tuitrain", "compare", "--no-ui", str(folder)])
    best = next((line.strip() for line in out.splitlines() if "Best by" in line), "")
    print(f"tuitrain compare --no-ui of all {runs:,}: {seconds:.2f} s (exit {rc}); {best[:120]}")


CHILD = """
import sys, time
import tuitrain
run = tuitrain.init(project="kill9", name="victim", dir=sys.argv[1], read_every=int(sys.argv[2]))
step = 0
while True:
    run.log({"train/loss": 1.0 / (step + 1), "lr": 0.1})
    if step % 25 == 0:
        print(step, flush=True)
    step += 1
    if step % 500 == 0:
        time.sleep(0.001)
"""


def kill9(kills: int, seed: int) -> int:
    from tuitrain.core.serieslog import read_series
    from tuitrain.records import read_record

    rng = random.Random(seed)
    failures = 0
    for k in range(kills):
        folder = Path(tempfile.mkdtemp(prefix="tuitrain-kill9-"))
        read_every = rng.choice([1, 7, 50, 400])
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(folder), str(read_every)], env=ENV, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it is logging
        time.sleep(rng.uniform(0.05, 2.5))
        proc.send_signal(signal.SIGKILL)
        reported = [int(first)] + [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        (path,) = folder.glob("*/*.json")
        record = read_record(path)
        series = read_series(path.with_suffix(".series"))
        loss = series.get("train/loss")
        kept = loss.steps.tolist() if loss is not None else []
        size = path.with_suffix(".series").stat().st_size
        # every step up to the last one kept is there, in order, none twice
        complete = kept == list(range(len(kept)))
        ok = complete and record.status == "running"
        failures += not ok
        print(
            f"kill {k + 1:2}: read_every={read_every:3}, killed after step {reported[-1]:,} was reported; "
            f"files read (status {record.status}); series log {size:,} bytes, {len(kept):,} steps kept, "
            f"steps 0..{len(kept) - 1:,} all there: {complete}; lost to the kill: the steps after the last "
            f"complete frame ({max(reported[-1] + 1 - len(kept), 0):,} of those reported)"
        )
    print(f"{kills} kills: {kills - failures} with every file read and no step before the last complete frame lost")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("million")
    m.add_argument("--steps", type=int, default=1_000_000)
    t = sub.add_parser("thousand")
    t.add_argument("--runs", type=int, default=1000)
    t.add_argument("--steps", type=int, default=1000)
    k = sub.add_parser("kill9")
    k.add_argument("--kills", type=int, default=12)
    k.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()
    if args.what == "million":
        million(args.steps)
    elif args.what == "thousand":
        thousand(args.runs, args.steps)
    else:
        return kill9(args.kills, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
