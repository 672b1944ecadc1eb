"""Does the app slow training? The same preset's training samples/s with the app running
(headless Textual driver, 120x40, run screen visible) against the headless engine (--no-ui path:
HeadlessPrinter to /dev/null), alternated so drifting machine load hits both alike.

    python benchmarks/ui_overhead.py [--data-dir DIR] [--rounds 3]

Samples/s is the engine's own per-epoch training throughput (evaluation excluded), read back from
the run files both front ends write. Target: UI-on / UI-off >= 0.95.

Each trial runs in a fresh process, as `tuitrain --preset` and `--no-ui` do: torch used from two
threads of one process (e.g. the main thread, then a worker) runs markedly slower on CPU, which
would be charged to the UI otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuitrain.catalog import run_paths  # noqa: E402
from tuitrain.headless import HeadlessPrinter  # noqa: E402
from tuitrain.presets import load_preset_file  # noqa: E402
from tuitrain.records import read_record  # noqa: E402
from tuitrain.session import PresetInvocation  # noqa: E402

PRESET = """
name = "ui_overhead"
title = "UI overhead benchmark: Model B on a subset"
[defaults]
model = "model_b"
activation = "relu"
optimizer = "adam"
lr = 0.001
batch_size = {batch_size}
epochs = {epochs}
subset = {subset}
test_subset = 1000
device = "{device}"
"""


def samples_per_s(runs_dir: Path) -> float:
    records = [read_record(p) for p in run_paths(runs_dir)]
    epochs = [e for r in records for e in r.epochs]
    if not epochs:
        raise SystemExit(f"no finished epoch under {runs_dir}")
    # total samples over total training time: epochs weigh by their length
    samples = sum(e.samples_per_s * (e.duration_s - e.eval_s) for e in epochs)
    seconds = sum(e.duration_s - e.eval_s for e in epochs)
    return samples / seconds


def headless(preset_path: Path, runs_dir: Path, data_dir: Path) -> float:
    invocation = PresetInvocation.prepare(load_preset_file(preset_path), runs_dir=runs_dir, data_dir=data_dir)
    with open(os.devnull, "w") as null:
        invocation.run(HeadlessPrinter(null))
    return samples_per_s(runs_dir)


def with_app(preset_path: Path, runs_dir: Path, data_dir: Path) -> float:
    from tuitrain.tui.app import TuitrainApp
    from tuitrain.tui.screens.run import RunScreen

    async def drive() -> None:
        app = TuitrainApp(
            preset="ui_overhead", runs_dir=runs_dir, data_dir=data_dir, presets={"ui_overhead": preset_path}
        )
        async with app.run_test(size=(120, 40)) as pilot:
            while not (isinstance(app.screen, RunScreen) and app.screen.done):
                await pilot.pause(0.2)

    asyncio.run(drive())
    return samples_per_s(runs_dir)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder (default: found as the CLI finds it)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--trial", choices=["off", "on"], help=argparse.SUPPRESS)  # one trial in this process
    p.add_argument("--preset-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--runs-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trial:
        fn = headless if args.trial == "off" else with_app
        print(fn(args.preset_file, args.runs_dir, args.data_dir))
        return 0
    with tempfile.TemporaryDirectory(prefix="tuitrain-bench-") as tmp:
        preset_path = Path(tmp) / "ui_overhead.toml"
        preset_path.write_text(
            PRESET.format(batch_size=args.batch_size, epochs=args.epochs, subset=args.subset, device=args.device)
        )
        print(
            f"model_b, {args.subset} train images, {args.epochs} epochs, batch {args.batch_size}, "
            f"device {args.device}; {args.rounds} alternated rounds",
            flush=True,
        )
        off, on = [], []
        for i in range(args.rounds):
            for name, trial, out in (("UI off", "off", off), ("UI on ", "on", on)):
                start = time.perf_counter()
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--trial",
                        trial,
                        "--preset-file",
                        str(preset_path),
                        "--runs-dir",
                        str(Path(tmp) / f"runs-{trial}-{i}"),
                        *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                value = float(child.stdout.strip().splitlines()[-1])
                out.append(value)
                print(
                    f"round {i + 1}  {name}  {value:8.0f} samples/s  ({time.perf_counter() - start:.1f}s wall)",
                    flush=True,
                )
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f"\nmedian UI off {m_off:.0f} samples/s, UI on {m_on:.0f} samples/s")
        print(f"ratio UI on / UI off = {m_on / m_off:.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
