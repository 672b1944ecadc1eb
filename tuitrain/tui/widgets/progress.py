"""Progress of the run in progress: run i of n, epoch, batch, throughput, elapsed, ETA, device."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tuitrain import format as fmt
from tuitrain.monitor import SweepMonitor
from tuitrain.tui.widgets.charts import run_style

BAR_WIDTH = 20


def path_tail(path: str, width: int) -> str:
    """The end of `path` in at most `width` characters (at least its last part), '…' where cut."""
    if len(path) <= width:
        return path
    tail = path[-max(width - 1, 1) :]
    if "/" in tail[1:]:
        tail = tail[tail.index("/", 1) :]  # start at a folder boundary
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return "…" + (tail if len(tail) >= len(name) else "/" + name)


def text_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)


class ProgressPanel(Static):
    """A few lines of text; rebuilt from the monitor by the run screen's handlers."""

    def show(self, monitor: SweepMonitor, *, paused: bool, note: str = "", files: str | None = None) -> None:
        """`files`: the run files' folder, after the note, cut at the start (its end names the invocation)
        to fit the width."""
        run = monitor.current
        text = Text()
        if run is None:
            text.append("Preparing… ", style="bold")
            text.append(monitor.last_log or "loading data")
            self.update(text)
            return
        colour = run_style(run.run_id, run.run_index).markup
        text.append(f"Run {run.run_index + 1}/{run.run_count} ", style="bold")
        text.append(run.label, style=f"bold {colour}")
        text.append(f"  {fmt.spec_summary(run.spec, run.config)}", style="dim")
        if paused and run.status == "running":
            text.append("  PAUSED", style="bold reverse yellow")
        text.append("\n")
        frac = run.batch / max(run.batches_per_epoch, 1)
        text.append(f"Epoch {run.epoch}/{run.spec.epochs}  ")
        text.append(text_bar(frac), style=colour)
        text.append(f" batch {run.batch}/{run.batches_per_epoch}")
        text.append(f"  {run.samples_per_s:,.0f} samples/s\n")
        text.append(f"Elapsed {fmt.duration(run.elapsed_s)}  ETA {fmt.duration(run.eta_s)}  ")
        text.append(f"Device {run.device}", style="dim")
        if note:
            text.append(f"\n{note}", style="bold")
        if files:
            room = self.content_size.width - len(note) - len(" Files: ") if self.content_size.width else len(files)
            text.append(f"{' ' if note else chr(10)}Files: ")
            text.append(path_tail(files, room))
        self.update(text)
