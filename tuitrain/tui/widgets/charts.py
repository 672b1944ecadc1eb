"""The run screen's plotext charts: batch loss per step and test accuracy per epoch, one line per run.

They redraw only when told (the run screen calls draw() from a timer, a few times a second at most)
and plot about one point per column: the full series stays in the monitor and the record.
"""

from __future__ import annotations

import math
import time

import numpy as np
from textual_plotext import PlotextPlot

from tuitrain.monitor import RunState, downsample

# One colour per run, in run order; the same in both charts and in the tables (as Rich markup).
PALETTE = [(0, 175, 255), (255, 135, 0), (95, 215, 95), (215, 95, 215), (255, 215, 0), (255, 95, 95), (135, 135, 255)]


def run_colour(run_index: int) -> tuple[int, int, int]:
    return PALETTE[run_index % len(PALETTE)]


def run_markup_colour(run_index: int) -> str:
    r, g, b = run_colour(run_index)
    return f"rgb({r},{g},{b})"


def int_ticks(low: int, high: int, count: int = 5) -> list[int]:
    """About `count` whole-number ticks from low to high (steps and epochs are whole numbers)."""
    if high <= low:
        return [low]
    step = max(1, -(-(high - low) // (count - 1)))
    return list(range(low, high + 1, step))


def _finite(x: list[float], y: list[float], positive: bool) -> tuple[list[float], list[float]]:
    keep = [(a, b) for a, b in zip(x, y) if math.isfinite(b) and (b > 0 or not positive)]
    return [a for a, _ in keep], [b for _, b in keep]


class LossChart(PlotextPlot):
    """Batch loss against global step, EMA-smoothed or raw, linear or log scale."""

    render_s: float = 0.0
    """Wall time of the last plotext render: the run screen spaces redraws by it."""

    def render(self):
        start = time.perf_counter()
        result = super().render()
        self.render_s = time.perf_counter() - start
        return result

    def draw(self, runs: list[RunState], *, smooth: bool, log_scale: bool) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(f"Batch loss ({'EMA' if smooth else 'raw'}{', log' if log_scale else ''})")
        # braille packs two points per column; leave room for the y-axis labels
        points = max(2 * (self.size.width - 10), 10)
        last_step = 0
        for run in runs:
            if not run.losses:
                continue
            series = np.asarray(run.smoothed if smooth else run.losses)
            x, y = _finite(*downsample(run.steps(), series, points), positive=log_scale)
            if x:
                plt.plot(x, y, label=run.label, color=run_colour(run.run_index), marker="braille")
                last_step = max(last_step, int(run.steps()[-1]))
        if last_step:
            plt.xticks(int_ticks(0, last_step))
        if log_scale:
            plt.yscale("log")
        plt.xlabel("step")
        self.refresh()


class AccuracyChart(PlotextPlot):
    """Test accuracy (%) after each epoch."""

    def draw(self, runs: list[RunState]) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title("Test accuracy %")
        last_epoch, lowest = 1, 100.0
        for run in runs:
            if not run.epochs:
                continue
            x = [e.epoch for e in run.epochs]
            y = [e.test_accuracy for e in run.epochs]
            last_epoch = max(last_epoch, run.spec.epochs)
            lowest = min([lowest, *y])
            plt.plot(x, y, label=run.label, color=run_colour(run.run_index), marker="braille")
            plt.scatter(x, y, color=run_colour(run.run_index), marker="dot")
        plt.xlim(1, max(last_epoch, 2))
        plt.xticks(int_ticks(1, last_epoch, count=min(last_epoch, 8)))
        # accuracy cannot pass 100%: keep the axis there, with room below the lowest point
        plt.ylim(max(0.0, math.floor(lowest / 5) * 5 - 5), 100)
        plt.xlabel("epoch")
        self.refresh()
