"""The app at scale: the run screen's redraw with a million-step run, the home screen with a thousand runs.

Usage (from the repository root):
    python benchmarks/app_scale.py redraw [--steps 1000000]
    python benchmarks/app_scale.py home [--runs 1000 --steps 1000]

redraw: a script run of --steps steps x 2 metrics is watched in the app (80x24, headless); once all of it is in,
the loss chart is redrawn 5 times (EMA, then raw, then the picked series "lr") and each redraw's time is printed:
preparing the points (downsampling) plus plotext's render of the chart.
home: --runs script runs of --steps steps in one folder; prints the time from the app's start until the home
screen lists all of them.
A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tuitrain.catalog import run_paths


def make_runs(folder: Path, runs: int, steps: int) -> list[Path]:
    import tuitrain

    paths = []
    for i in range(runs):
        run = tuitrain.init(project="scale", name=f"run {i}", config={"lr": 0.001 * (i + 1)}, dir=folder)
        for step in range(steps):
            run.log({"train/loss": 1.0 / (step + 1) + (50.0 if step == steps // 3 else 0.0), "lr": 0.1})
        run.log_epoch(val_loss=0.5 + (i % 97) / 100)
        run.finish()
        paths.append(run.path)
    return paths


async def redraw(steps: int) -> None:
    from tuitrain.tui.app import TuitrainApp
    from tuitrain.tui.screens.run import RunScreen
    from tuitrain.tui.widgets.charts import LossChart

    folder = Path(tempfile.mkdtemp(prefix="tuitrain-redraw-"))
    (path,) = make_runs(folder, 1, steps)
    app = TuitrainApp(runs_dir=folder, watch=path)
    start = time.perf_counter()
    async with app.run_test(size=(80, 24)) as pilot:
        while not (isinstance(app.screen, RunScreen) and app.screen.done):
            await pilot.pause(0.05)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        print(f"watched {steps:,} steps into the run screen in {time.perf_counter() - start:.2f} s")
        chart = screen.query_one(LossChart)
        for label, smooth, metric in (
            ("EMA", True, "loss"),
            ("EMA", True, "loss"),
            ("raw", False, "loss"),
            ("raw", False, "loss"),
            ("series lr", False, "lr"),
        ):
            screen.smooth, screen.step_metric = smooth, metric
            begin = time.perf_counter()
            screen.draw_loss_chart()
            prepared = time.perf_counter() - begin
            chart.render()  # what Textual calls to paint it: plotext builds the figure
            print(
                f"redraw ({label}): points {prepared * 1e3:.1f} ms + plotext render {chart.render_s * 1e3:.1f} ms "
                f"= {(prepared + chart.render_s) * 1e3:.1f} ms"
            )


async def home(runs: int, steps: int) -> None:
    from textual.widgets import DataTable

    from tuitrain.tui.app import TuitrainApp
    from tuitrain.tui.screens.home import HomeScreen

    folder = Path(tempfile.mkdtemp(prefix="tuitrain-home-"))
    made = time.perf_counter()
    make_runs(folder, runs, steps)
    print(f"wrote {len(run_paths(folder)):,} runs of {steps:,} steps in {time.perf_counter() - made:.1f} s")
    app = TuitrainApp(runs_dir=folder)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        while True:
            screen = app.screen
            if isinstance(screen, HomeScreen) and screen.run_files and len(screen.run_files) >= runs:
                table = screen.query_one("#runs", DataTable)
                if table.row_count >= runs:
                    break
            await pilot.pause(0.02)
        print(f"home screen lists {table.row_count:,} runs {time.perf_counter() - start:.2f} s after the app started")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("redraw")
    r.add_argument("--steps", type=int, default=1_000_000)
    h = sub.add_parser("home")
    h.add_argument("--runs", type=int, default=1000)
    h.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    if args.what == "redraw":
        asyncio.run(redraw(args.steps))
    else:
        asyncio.run(home(args.runs, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
