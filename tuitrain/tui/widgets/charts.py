"""The plotext charts of the run and compare screens, and the style (colour, marker) of each run.

They redraw only when told (the run screen calls draw() from a timer, a few times a second at most)
and plot about one point per column: the full series stays in the monitor and the record. Charts
carry no legend over the data: their title is the widget's border title, and the runs' colours are
explained beside the chart (the run screen's legend line, the compare screen's run list).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual_plotext import PlotextPlot

from tuitrain import format as fmt
from tuitrain.monitor import ACCURACY, LOSS, RunState, downsample

PALETTE = [(0, 175, 255), (255, 135, 0), (95, 215, 95), (215, 95, 215), (255, 215, 0), (255, 95, 95), (135, 135, 255)]
MARKERS = ("braille", "•", "+", "x")
"""Past the palette a run's line is drawn with the next marker: no two runs of a sweep look the same."""
ACCURACY_TICKS = 6
"""About this many ticks on the accuracy axis: 0-100 in steps of 20, 80-100 in steps of 5."""
COMPACT_BELOW = 9
"""Rows under which a chart spares its x label and the top of its frame (see `frame`)."""
SWATCH = {"braille": "━━", "•": "••", "+": "++", "x": "××"}


@dataclass(frozen=True)
class RunStyle:
    colour: tuple[int, int, int]
    marker: str = "braille"

    @property
    def markup(self) -> str:
        r, g, b = self.colour
        return f"rgb({r},{g},{b})"

    def swatch(self) -> Text:
        """What the run's line looks like, for a legend outside the chart."""
        return Text(SWATCH.get(self.marker, self.marker * 2), style=f"bold {self.markup}")

    def with_marker(self, marker: str) -> RunStyle:
        return RunStyle(self.colour, marker)


def run_style(run_id: str, run_index: int | None) -> RunStyle:
    """A run's style from what never changes about it, so it is the same on every screen and in every
    comparison: the runs of one invocation take the palette in order (run ids are "<invocation>-NN",
    and the invocation picks where in the palette its first run starts); a run without a position
    (older files, runs made elsewhere) takes the colour its id hashes to."""
    if run_index is None:
        return RunStyle(PALETTE[zlib.crc32(run_id.encode()) % len(PALETTE)])
    invocation = run_id.rsplit("-", 1)[0]
    start = zlib.crc32(invocation.encode()) % len(PALETTE)
    lap = run_index // len(PALETTE)
    return RunStyle(PALETTE[(start + run_index) % len(PALETTE)], MARKERS[lap % len(MARKERS)])


def distinct_styles(styles: Sequence[RunStyle]) -> list[RunStyle]:
    """The same styles, except that a run whose style is already taken (two runs from different
    invocations, say) keeps its colour and takes the next free marker."""
    taken: set[RunStyle] = set()
    result = []
    for style in styles:
        for marker in (style.marker, *MARKERS):
            candidate = style.with_marker(marker)
            if candidate not in taken:
                break
        taken.add(candidate)
        result.append(candidate)
    return result


def int_ticks(low: int, high: int, count: int = 5) -> list[int]:
    """About `count` whole-number ticks from low to high at round steps (steps and epochs are whole numbers)."""
    if high <= low:
        return [low]
    if high - low < count:
        return list(range(low, high + 1))
    return [int(t) for t in round_ticks(low, high, count) if t == int(t)]


def round_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Evenly spaced ticks at round numbers (steps of 1, 2 or 5 times a power of ten) in [low, high]:
    the step whose number of ticks is nearest `count` (the larger step on a tie)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    power = 10 ** math.floor(math.log10((high - low) / max(count - 1, 1)))

    def ticks_of(step: float) -> list[float]:
        first = math.ceil(low / step - 1e-9)
        last = math.floor(high / step + 1e-9)
        return [round(n * step, 10) for n in range(first, last + 1)]

    steps = [m * p for p in (power / 10, power, power * 10) for m in (1, 2, 5)]
    return min((ticks_of(step) for step in reversed(steps)), key=lambda t: abs(len(t) - count))


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in [low, high]; with 1-2-5 steps between them when fewer than three fit."""
    if low <= 0 or high <= low:
        return []
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 5, 7)):
        ticks = [
            m * 10.0**e
            for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for m in mantissas
            if low <= m * 10.0**e <= high
        ]
        if len(ticks) >= 3:
            break
    return ticks


def tick_label(value: float) -> str:
    return f"{value:g}"


def tick_count(rows: int, most: int) -> int:
    """As many y ticks as fit `rows` rows of plot with a row between."""
    return max(2, min(most, (rows + 1) // 2))


def frame(plt, *, xlabel: str, height: int) -> int:
    """The x label and the frame of a chart `height` rows tall; the rows left for the plot. A short chart
    (a small terminal) has no x label and no frame at the top and right (the ticks say what the x axis is):
    two more rows of plot, which it needs more."""
    if height < COMPACT_BELOW:
        plt.xaxes(True, False)
        plt.yaxes(True, False)
        return height - 2
    plt.xlabel(xlabel)
    return height - 4


def set_y_ticks(plt, low: float, high: float, *, log_scale: bool, count: int = 5) -> None:
    ticks = log_ticks(low, high) if log_scale else round_ticks(low, high, count)
    if log_scale and len(ticks) > count:
        ticks = ticks[:: -(-len(ticks) // count)]
    if ticks:
        plt.yticks(ticks, [tick_label(t) for t in ticks])


def accuracy_range(lowest: float) -> tuple[float, float]:
    """Accuracy cannot pass 100%: the axis ends there, and starts at a round number below the lowest point."""
    span = 100.0 - lowest
    step = 5.0 if span <= 25 else 10.0 if span <= 50 else 20.0
    return max(0.0, math.floor(lowest / step) * step - (step if lowest % step == 0 else 0)), 100.0


def _finite(x: list[float], y: list[float], positive: bool) -> tuple[list[float], list[float]]:
    keep = [(a, b) for a, b in zip(x, y) if math.isfinite(b) and (b > 0 or not positive)]
    return [a for a, _ in keep], [b for _, b in keep]


def draw_loss(
    plt, series: Sequence[tuple[list[float], list[float], RunStyle]], *, log_scale: bool, xlabel: str, height: int
) -> None:
    """Loss lines with round y ticks (on a log scale: powers of ten)."""
    plt.clear_figure()
    drawn = [(xs, ys, style) for xs, ys, style in ((*_finite(x, y, log_scale), s) for x, y, s in series) if xs]
    for xs, ys, style in drawn:
        plt.plot(xs, ys, color=style.colour, marker=style.marker)
    if drawn:
        low = min(min(ys) for _, ys, _ in drawn)
        high = max(max(ys) for _, ys, _ in drawn)
        if log_scale:
            plt.yscale("log")  # plotext cannot draw an empty log-scale plot: only with lines
    rows = frame(plt, xlabel=xlabel, height=height)
    if drawn:
        set_y_ticks(plt, low, high, log_scale=log_scale, count=tick_count(rows, 5))


def draw_accuracy(
    plt, series: Sequence[tuple[Sequence[float], Sequence[float], RunStyle]], *, last_epoch: int, height: int
) -> None:
    """Test accuracy lines, a dot at each epoch, on an axis that ends at 100% with round ticks."""
    plt.clear_figure()
    lowest = 100.0
    for xs, ys, style in series:
        if not xs:
            continue
        lowest = min([lowest, *ys])
        plt.plot(xs, ys, color=style.colour, marker=style.marker)
        plt.scatter(xs, ys, color=style.colour, marker="dot" if style.marker == "braille" else style.marker)
    plt.xlim(1, max(last_epoch, 2))
    plt.xticks(int_ticks(1, last_epoch, count=min(last_epoch, 8)))
    low, high = accuracy_range(lowest)
    plt.ylim(low, high)
    rows = frame(plt, xlabel="epoch", height=height)
    set_y_ticks(plt, low, high, log_scale=False, count=tick_count(rows, ACCURACY_TICKS))


def draw_step_series(
    chart: PlotextPlot, runs: list[RunState], metric: str, *, smoothed: bool, log_scale: bool, last: float = 1.0
) -> None:
    """A per-step series of the runs (the training loss or a named one) at the steps they logged, over the `last`
    fraction of their steps, downsampled to the chart's width."""
    # braille packs two points per column; leave room for the y-axis labels
    points = max(2 * (chart.size.width - 10), 10)
    picked = [(run, *run.step_series(metric, smoothed)) for run in runs]
    picked = [(run, steps, values) for run, steps, values in picked if len(steps)]
    last_step = max((int(steps[-1]) for _, steps, _ in picked), default=0)
    first_step = int(last_step * (1 - last)) if last < 1 else 0
    series = []
    for run, steps, values in picked:
        if first_step:
            start = int(np.searchsorted(steps, first_step))
            steps, values = steps[start:], values[start:]
        if len(steps):
            x, y = downsample(steps, values, points)
            series.append((x, y, run_style(run.run_id, run.run_index)))
    draw_loss(chart.plt, series, log_scale=log_scale, xlabel="step", height=chart.content_size.height)
    if last_step:
        chart.plt.xticks(int_ticks(first_step, last_step))  # type: ignore[arg-type]  # stub says list[float]; plotext takes ints


class LossChart(PlotextPlot):
    """Batch loss against global step, EMA-smoothed or raw, linear or log scale."""

    render_s: float = 0.0
    """Wall time of the last plotext render: the run screen spaces redraws by it."""

    def render(self):
        start = time.perf_counter()
        result = super().render()
        self.render_s = time.perf_counter() - start
        return result

    def draw(
        self, runs: list[RunState], *, smooth: bool, log_scale: bool, metric: str = LOSS, last: float = 1.0
    ) -> None:
        """Draw `metric` (the training loss, or a named per-step series) of the runs, over the `last` fraction of
        their steps (1.0: all of them)."""
        smoothed = smooth and metric == LOSS  # a named series is drawn as logged
        name = "Batch loss" if metric == LOSS else fmt.printable(metric)
        what = ("EMA" if smoothed else "raw") if metric == LOSS else ""
        shown = ", ".join(w for w in (what, "log" if log_scale else "", f"last {last:.0%}" if last < 1 else "") if w)
        self.border_title = f"{name} ({shown})" if shown else name
        draw_step_series(self, runs, metric, smoothed=smoothed, log_scale=log_scale, last=last)
        self.refresh()


class AccuracyChart(PlotextPlot):
    """Test accuracy (%) after each epoch."""

    def draw(self, runs: list[RunState], metric: str = ACCURACY, log_scale: bool = False) -> None:
        """Draw a per-epoch figure of the runs: test accuracy (on its 0-100 axis), or another figure by name."""
        self.border_title = "Test accuracy %" if metric == ACCURACY else f"{fmt.printable(metric)} per epoch"
        series = [(*run.epoch_series(metric), run_style(run.run_id, run.run_index)) for run in runs]
        series = [(xs, ys, style) for xs, ys, style in series if xs]
        last_epoch = max([1, *(run.spec.epochs for run in runs if run.epochs)])
        if metric == ACCURACY:
            draw_accuracy(self.plt, series, last_epoch=last_epoch, height=self.content_size.height)
        else:
            draw_loss(self.plt, series, log_scale=log_scale, xlabel="epoch", height=self.content_size.height)
            self.plt.xlim(1, max(last_epoch, 2))
            self.plt.xticks(int_ticks(1, last_epoch, count=min(last_epoch, 8)))  # type: ignore[arg-type]
        self.refresh()

    def draw_steps(self, runs: list[RunState], metric: str, log_scale: bool = False) -> None:
        """Draw a named per-step series of the runs instead, as logged: for runs that have no epochs (a TensorBoard
        log), whose per-epoch chart would stay empty."""
        self.border_title = f"{fmt.printable(metric)} per step"
        draw_step_series(self, runs, metric, smoothed=False, log_scale=log_scale)
        self.refresh()
