"""Sharing a machine: tuitrain processes side by side, and a sweep's runs in parallel (--jobs).

    python benchmarks/parallel_sweeps.py [--data-dir DIR] [--subset 20000] [--epochs 2] [--sweep-only]

In one invocation, each case in fresh processes, one after another:
  solo        one tuitrain process training one Model B run alone
  two         two tuitrain processes started together, each training that run
  app+cli     the app (Textual, driven headless by Pilot, charts on) beside a headless process, both training it
  lr_sweep    `--preset lr_sweep --epochs 1` with --jobs 1, --jobs 2 and --jobs auto, and 2 at a time side by side on
              threads of one process (executors.threads, which --jobs auto uses on one GPU only)
Prints samples/s per run (the engine's own training throughput, read back from the run files), total samples/s
(training samples of all runs / wall time) and wall time, and the ratios against the targets. All processes share
one temporary cache folder, so they see one another's core leases (and no calibration of yours).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.ui_overhead import PRESET, samples_per_s  # noqa: E402
from tuitrain.catalog import run_paths  # noqa: E402
from tuitrain.records import read_record  # noqa: E402

TARGETS = {
    "two": 0.6,  # each of two processes, of its solo samples/s
    "app": 0.5,  # the app's run beside a headless one, of solo
    "jobs2": 1.4,  # lr_sweep --jobs 2 total samples/s, of --jobs 1
    "auto": 0.95,  # --jobs auto, of the better of --jobs 1 and 2
}
SIDE_BY_SIDE = """
import sys
from pathlib import Path
from tuitrain.presets import available_presets, load_preset_file
from tuitrain.session import PresetInvocation
data = Path(sys.argv[2]) if len(sys.argv) > 2 else None
inv = PresetInvocation.prepare(load_preset_file(available_presets()["lr_sweep"]), runs_dir=Path(sys.argv[1]),
                               overrides={"epochs": 1}, data_dir=data, jobs=2)
inv.side_by_side = True
inv.run(lambda event: None)
print(f"up to {inv.jobs} at a time")
"""
"""lr_sweep --epochs 1, 2 runs at a time on threads of this process (the CLI picks that on one GPU only)."""


def tuitrain(args: list[str], runs: Path, data_dir: Path | None, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuitrain", *args, "--no-ui", "--runs-dir", str(runs)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def app_trial(preset: Path, runs: Path, data_dir: Path | None, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "benchmarks" / "ui_overhead.py"), "--trial", "on"]
    command += ["--preset-file", str(preset), "--runs-dir", str(runs)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen) -> str:
    """Wait for the processes; the first one's output."""
    outputs = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{proc.args!r} failed ({proc.returncode}):\n{err[-2000:]}")
        outputs.append(out or "")
    return outputs[0]


def trained_samples(record) -> tuple[float, float]:
    """A run's training samples and training seconds (evaluation excluded)."""
    seconds = [e.duration_s - e.eval_s for e in record.epochs]
    return sum(e.samples_per_s * s for e, s in zip(record.epochs, seconds)), sum(seconds)


def run_rate(record) -> float:
    samples, seconds = trained_samples(record)
    return samples / max(seconds, 1e-9)


def sweep_totals(runs: Path) -> tuple[float, int]:
    """Training samples of all runs, and how many runs."""
    records = [read_record(p) for p in run_paths(runs)]
    return sum(trained_samples(r)[0] for r in records), len(records)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: found as the CLI finds it)")
    p.add_argument("--subset", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sweep-only", action="store_true", help="only the lr_sweep cases")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuitrain-parallel-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "TUITRAIN_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
        env.pop("TUITRAIN_CPU_THREADS", None)  # the point is what tuitrain picks by itself
        preset = tmp / "one_run.toml"
        preset.write_text(PRESET.format(batch_size=64, epochs=args.epochs, subset=args.subset, device="cpu"))
        cores = len(os.sched_getaffinity(0))
        print(f"machine: {cores} cores; one run = model_b, {args.subset} images, {args.epochs} epochs")
        if not args.sweep_only:
            sharing(preset, tmp, args.data_dir, env)
        sweeps(tmp, args.data_dir, env)
    return 0


def sharing(preset: Path, tmp: Path, data_dir: Path | None, env: dict[str, str]) -> None:
    """The solo, two and app+cli cases."""
    finish(tuitrain(["--preset", str(preset)], tmp / "solo", data_dir, env))
    solo = samples_per_s(tmp / "solo")
    print(f"\nsolo                      {solo:9,.0f} samples/s")

    first, second = (tuitrain(["--preset", str(preset)], tmp / f"two{i}", data_dir, env) for i in (1, 2))
    finish(first, second)
    two = [samples_per_s(tmp / f"two{i}") for i in (1, 2)]
    print(
        f"two processes together    {two[0]:9,.0f} and {two[1]:,.0f} samples/s: "
        f"{two[0] / solo:.2f}x and {two[1] / solo:.2f}x of solo (target >= {TARGETS['two']}x each)"
    )

    app = app_trial(preset, tmp / "app", data_dir, env)
    time.sleep(1.0)  # the app is up and training when the headless one starts
    cli = tuitrain(["--preset", str(preset)], tmp / "beside", data_dir, env)
    finish(app, cli)
    app_rate, cli_rate = samples_per_s(tmp / "app"), samples_per_s(tmp / "beside")
    print(
        f"app beside a headless run {app_rate:9,.0f} (app) and {cli_rate:,.0f} (headless) samples/s: "
        f"{app_rate / solo:.2f}x and {cli_rate / solo:.2f}x of solo (target app >= {TARGETS['app']}x)"
    )


def sweeps(tmp: Path, data_dir: Path | None, env: dict[str, str]) -> None:
    """lr_sweep --epochs 1 with --jobs 1, 2 and auto, and 2 at a time side by side on threads."""
    print("\nlr_sweep --epochs 1 (3 runs of Model B on all 60,000 images)")
    totals = {}
    for jobs in ("1", "2", "auto", "threads"):
        runs = tmp / f"sweep-{jobs}"
        start = time.perf_counter()
        if jobs == "threads":
            command = [sys.executable, "-c", SIDE_BY_SIDE, str(runs), *([str(data_dir)] if data_dir else [])]
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            out = finish(subprocess.Popen(command, cwd=ROOT, env=env, text=True, **pipes))
        else:
            out = finish(tuitrain(["--preset", "lr_sweep", "--epochs", "1", "--jobs", jobs], runs, data_dir, env))
        wall = time.perf_counter() - start
        at_once = re.search(r"up to (\d+) at a time", out)
        used = at_once.group(1) if at_once else "1"
        samples, count = sweep_totals(runs)
        per_run = [run_rate(read_record(path)) for path in run_paths(runs)]
        totals[jobs] = samples / wall
        print(
            f"  {'--jobs ' + jobs if jobs != 'threads' else 'threads':<12} ({used} at once)  wall {wall:6.1f} s  "
            f"total {samples / wall:9,.0f} samples/s  per run {', '.join(f'{r:,.0f}' for r in per_run)} ({count} runs)"
        )
    best = max(totals["1"], totals["2"])
    print(
        f"  --jobs 2 / --jobs 1: {totals['2'] / totals['1']:.2f}x (target >= {TARGETS['jobs2']}x); "
        f"--jobs auto / best of 1 and 2: {totals['auto'] / best:.2f}x (target >= {TARGETS['auto']}x); "
        f"2 on threads / 2 in processes: {totals['threads'] / totals['2']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
