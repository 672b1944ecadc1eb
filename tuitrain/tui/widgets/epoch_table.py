"""The assignment's per-epoch table (epoch, initial loss, final loss, test accuracy) for every run, then a column
per extra metric a script logged (`run.log_epoch(lr=...)`), added when the first epoch that has it arrives."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tuitrain import format as fmt
from tuitrain.core.events import EpochEnded
from tuitrain.monitor import RunState
from tuitrain.tui.widgets.charts import run_style


class EpochTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self.add_column("Run", key="run")
        for name in fmt.EPOCH_HEADER:
            self.add_column(name, key=name)

    def add_epoch(self, run: RunState, epoch: EpochEnded) -> None:
        label = Text(run.label, style=run_style(run.run_id, run.run_index).markup)
        cells = [Text(c, justify="right") for c in fmt.epoch_row(epoch)]
        for name in epoch.metrics:
            if f"metric:{name}" not in self.columns:
                self.add_column(fmt.printable(name), key=f"metric:{name}", default=Text(""))
        metric_keys = [str(k.value) for k in self.columns if str(k.value).startswith("metric:")]
        cells += [Text(fmt.metric(epoch.metrics.get(k[7:])), justify="right") for k in metric_keys]
        self.add_row(label, *cells, key=f"{run.run_id}:{epoch.epoch}")
        self.scroll_end(animate=False)

    def remove_run(self, run_id: str) -> None:
        for key in [k for k in self.rows if str(k.value).startswith(f"{run_id}:")]:
            self.remove_row(key)
