"""Progress of the runs in progress: run i of n, epoch, batch, throughput, elapsed, ETA, device.

One run training: three lines about it. Several at once (or runs waiting to start): a line per run, the
highlighted one marked, cut to the room the terminal leaves.
"""

from __future__ import annotations

from collections.abc import Collection

from rich.text import Text
from textual.widgets import Static

from tuitrain import format as fmt
from tuitrain.core.events import RunWaiting
from tuitrain.monitor import RunState, SweepMonitor
from tuitrain.tui.widgets.charts import run_style

BAR_WIDTH = 20
MIN_BAR_WIDTH = 8
"""The one run's bar shrinks to this in a narrow terminal, so that its line keeps the batch count."""
RUN_LINE_BAR_WIDTH = 12
"""The bar of a run's line when several runs are shown (a line holds all of a run's progress)."""
LABEL_WIDTH = 28
"""Labels in the runs' lines are padded to the longest shown, up to this; longer ones are cut."""
PANEL_LINES = 4
"""The panel's lines in a terminal 24 rows high, as with one run: its three lines and the note."""
HIGHLIGHT_MARK = "▸ "


def path_tail(path: str, width: int) -> str:
    """The end of `path` in at most `width` characters, '…' where cut: from a folder boundary where its last part
    fits (the run screen's f key shows the whole path)."""
    if len(path) <= width:
        return path
    tail = path[-max(width - 1, 1) :]
    if "/" in tail[1:]:
        tail = tail[tail.index("/", 1) :]  # start at a folder boundary
    return "…" + tail


def text_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)


class ProgressPanel(Static):
    """A few lines of text; rebuilt from the monitor by the run screen's handlers."""

    def show(
        self, monitor: SweepMonitor, *, paused: Collection[str] = (), note: str = "", files: str | None = None
    ) -> None:
        """`paused`: the ids of the paused runs; `files`: the run files' folder, after the note, cut at the start
        (its end names the invocation) to fit the width."""
        run = monitor.current
        if run is None and not monitor.waiting:
            text = Text()
            text.append("Preparing… ", style="bold")
            text.append(monitor.last_log or "loading data")
            self.update(text)
            return
        if len(monitor.live) > 1 or monitor.waiting:
            room = panel_lines(self.screen.size.height) - bool(note or files)
            text = Text("\n").join(run_lines(monitor, paused, room, self.content_size.width))
        else:
            assert run is not None  # no waiting run, so one has started
            text = self.run_details(run, paused=run.run_id in paused, width=self.content_size.width)
        if note:
            text.append(f"\n{note}", style="bold")
        if files:
            width = self.content_size.width or len(files) + len(note) + len(" Files: ")
            room = width - len(note) - len(" Files: ")
            if not note or room < len("…/" + files.rstrip("/").rsplit("/", 1)[-1]):  # the folder's name whole
                room = width - len("Files: ")
                note = ""
            text.append(f"{' ' if note else chr(10)}Files: ")
            text.append(path_tail(files, room))
        self.update(text)

    @staticmethod
    def run_details(run: RunState, *, paused: bool, width: int = 0) -> Text:
        """The three lines of the one run in progress (or of the last one, once none is), each cut to `width`
        (0: not cut) rather than wrapped: the bar is shorter in a narrow terminal, and what is cut first comes
        last."""
        colour = run_style(run.run_id, run.run_index).markup
        title = Text()
        title.append(f"Run {run.run_index + 1}/{run.run_count} ", style="bold")
        title.append(run.label, style=f"bold {colour}")
        if paused and run.status == "running":
            title.append("  PAUSED", style="bold reverse yellow")
        title.append(f"  {fmt.spec_summary(run.spec, run.config)}", style="dim")
        epoch = f"{run.position_text}  "
        batch = f" batch {run.batch_text}" if run.has_epochs else ""
        speed = f"  {run.speed_text}"
        room = width - len(epoch) - len(batch) - len(speed)
        bar_width = min(BAR_WIDTH, max(MIN_BAR_WIDTH, room)) if width else BAR_WIDTH
        progress = Text(epoch)
        progress.append(
            text_bar(run.batch / run.batches_per_epoch if run.batches_per_epoch else 0.0, bar_width), style=colour
        )
        progress.append(batch + speed)
        timing = Text(f"Elapsed {fmt.duration(run.elapsed_s)}  ETA {fmt.duration(run.eta_s)}  ")
        if run.device:  # a TensorBoard log does not say
            timing.append(f"Device {run.device}", style="dim")
        lines = [title, progress, timing]
        if width:
            for line in lines:
                line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)


def panel_lines(height: int) -> int:
    """Lines the panel may take in a terminal `height` rows high: as with one run at 24 rows, a fifth of a taller
    one (the charts and the epoch table keep the rest)."""
    return max(PANEL_LINES, height // 5)


def run_lines(monitor: SweepMonitor, paused: Collection[str], room: int, width: int) -> list[Text]:
    """A line per live run, then per waiting run, in run order, in at most `room` lines (at least 2), cut to
    `width` (0: not cut). Where they do not all fit: the highlighted run and the first others, and a last line
    that counts the rest."""
    live = {r.run_id: r for r in monitor.live}
    waiting = {w.run_id: w for w in monitor.queued}
    ids = [*live, *waiting]
    shown = ids
    room = max(room, 2)
    if len(ids) > room:
        highlighted = [monitor.current.run_id] if monitor.current is not None and monitor.current.run_id in live else []
        others = [i for i in ids if i not in highlighted][: room - 1 - len(highlighted)]
        shown = [i for i in ids if i in highlighted or i in others]
    label_width = min(max(len((live.get(i) or waiting[i]).label) for i in shown), LABEL_WIDTH)
    lines = [
        run_line(live[i], label_width, paused=i in paused, highlighted=live[i] is monitor.current)
        if i in live
        else waiting_line(waiting[i], label_width)
        for i in shown
    ]
    more_running = sum(i not in shown for i in live)
    more_waiting = sum(i not in shown for i in waiting)
    if more_running or more_waiting:
        counts = ([f"{more_running} more running"] if more_running else []) + (
            [f"{more_waiting} waiting"] if more_waiting else []
        )
        lines.append(Text(" " * len(HIGHLIGHT_MARK) + "+" + ", ".join(counts), style="dim"))
    if width:
        for line in lines:
            line.truncate(width, overflow="ellipsis")
    return lines


def run_label(run_index: int, run_count: int, label: str, width: int, style: str) -> Text:
    """'3/8 label' with the label padded (or cut) to `width`, so that the lines' figures line up."""
    text = Text(f"{run_index + 1}/{run_count} ", style="bold")
    shown = label if len(label) <= width else label[: width - 1] + "…"
    text.append(shown, style=style)
    text.append(" " * (width - len(shown)))
    return text


def run_line(run: RunState, label_width: int, *, paused: bool, highlighted: bool) -> Text:
    """One live run's progress: label, epoch, bar and batch, ETA, samples/s (or steps/s), device (what a narrow
    terminal cuts first comes last)."""
    colour = run_style(run.run_id, run.run_index).markup
    text = Text(HIGHLIGHT_MARK if highlighted else " " * len(HIGHLIGHT_MARK), style="bold")
    text.append_text(
        run_label(
            run.run_index, run.run_count, run.label, label_width, f"bold reverse {colour}" if highlighted else colour
        )
    )
    text.append(f"  {run.position_text} ")
    if paused:  # in the bar's place: the lines' figures stay lined up
        text.append("PAUSED".center(RUN_LINE_BAR_WIDTH), style="bold reverse yellow")
    else:
        text.append(
            text_bar(run.batch / run.batches_per_epoch if run.batches_per_epoch else 0.0, RUN_LINE_BAR_WIDTH),
            style=colour,
        )
    if run.has_epochs:
        text.append(f" {run.batch_text}")
    text.append(f"  ETA {fmt.duration(run.eta_s)}  {run.speed_text}  ")
    text.append(run.device, style="dim")
    return text


def waiting_line(run: RunWaiting, label_width: int) -> Text:
    text = Text(" " * len(HIGHLIGHT_MARK))
    text.append_text(run_label(run.run_index, run.run_count, run.label, label_width, "dim"))
    text.append(f"  {run.reason}", style="dim italic")
    return text
