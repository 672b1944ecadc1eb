"""The assignment's per-epoch table (epoch, initial loss, final loss, test accuracy) for every run, then a column
per extra metric a script logged (`run.log_epoch(lr=...)`), added when the first epoch that has it arrives.

Rows are grouped by run, in run order, each run's epochs in order, however the epochs arrive (runs trained at once
finish their epochs interleaved). A narrow terminal gets shorter headers, so that the test accuracy stays in view.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

from tuitrain import format as fmt
from tuitrain.core.events import EpochEnded
from tuitrain.monitor import RunState
from tuitrain.tui.widgets.charts import run_style
from tuitrain.tui.widgets.too_small import FULL_WIDTH

NARROW_EPOCH_HEADER = ("Epoch", "Init loss", "Final loss", "Test acc")
"""fmt.EPOCH_HEADER in a terminal narrower than 80 columns."""


@dataclass(frozen=True)
class EpochRow:
    run_id: str
    run_index: int
    label: Text
    epoch: EpochEnded

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.epoch.epoch}"

    @property
    def order(self) -> tuple[int, str, int]:
        return (self.run_index, self.run_id, self.epoch.epoch)


class EpochTable(DataTable):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.epoch_rows: list[EpochRow] = []
        """The rows shown, in table order."""
        self.metric_names: list[str] = []
        """The extra metrics' columns, in the order they first came."""
        self.narrow = False

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self.narrow = self.app.size.width < FULL_WIDTH
        self.rebuild()

    def add_columns_for_header(self) -> None:
        self.add_column("Run", key="run")
        for key, name in zip(fmt.EPOCH_HEADER, NARROW_EPOCH_HEADER if self.narrow else fmt.EPOCH_HEADER):
            self.add_column(name, key=key)
        for name in self.metric_names:
            self.add_column(fmt.printable(name), key=f"metric:{name}", default=Text(""))

    def add_epoch(self, run: RunState, epoch: EpochEnded) -> None:
        label = Text(run.label, style=run_style(run.run_id, run.run_index).markup)
        row = EpochRow(run.run_id, run.run_index, label, epoch)
        for name in [name for name in epoch.metrics if name not in self.metric_names]:
            self.metric_names.append(name)
            self.add_column(fmt.printable(name), key=f"metric:{name}", default=Text(""))
        position = sum(other.order <= row.order for other in self.epoch_rows)
        self.epoch_rows.insert(position, row)
        if position == len(self.epoch_rows) - 1:
            self.add_table_row(row)
        else:  # a row above others: DataTable only appends, so lay the rows out again
            self.rebuild()
        self.move_cursor(row=position, column=0)  # the cursor is not drawn: this scrolls the new row into view

    def add_table_row(self, row: EpochRow) -> None:
        cells = [Text(c, justify="right") for c in fmt.epoch_row(row.epoch)]
        cells += [Text(fmt.metric(row.epoch.metrics.get(name)), justify="right") for name in self.metric_names]
        self.add_row(row.label, *cells, key=row.key)

    def rebuild(self) -> None:
        self.clear(columns=True)
        self.add_columns_for_header()
        for row in self.epoch_rows:
            self.add_table_row(row)

    def on_resize(self, event: Resize) -> None:
        narrow = event.size.width < FULL_WIDTH
        if narrow != self.narrow and self.columns:
            self.narrow = narrow
            self.rebuild()

    def remove_run(self, run_id: str) -> None:
        for row in [r for r in self.epoch_rows if r.run_id == run_id]:
            self.epoch_rows.remove(row)
            self.remove_row(row.key)
