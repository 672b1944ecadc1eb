"""The compare screen: saved runs side by side, with overlaid curves, tables, grid and observations.

Self-contained: push it from any app (`app.push_screen(CompareScreen(paths))`). Files are read in a
thread worker; every figure comes from tuitrain.compare, the same model as `tuitrain compare --no-ui`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.selection_list import Selection
from textual_plotext import PlotextPlot

from tuitrain import format as fmt
from tuitrain.catalog import RunFile, load_run_file
from tuitrain.compare import (
    DEFAULT_THRESHOLD,
    Comparison,
    RunColumn,
    accuracy_curve,
    loss_curve,
)

# one palette for every screen: a run's colour is the same in the run screen and the comparison
from tuitrain.tui.widgets.charts import run_colour, run_markup_colour

THRESHOLDS = (90.0, 95.0, 97.0, 98.0, 99.0)

Source = Union[Comparison, Sequence[Union[Path, str, RunFile]]]


@dataclass
class RunsLoaded(Message):
    """The run files were read (in a worker)."""

    comparison: Comparison


class CompareScreen(Screen):
    """Runs side by side. Space: include/leave out a run; b: pin it as baseline; a: all hyperparameters."""

    CSS_PATH = "compare.tcss"
    AUTO_FOCUS = "#compare-runs"
    BINDINGS = [
        Binding("b", "pin_baseline", "Pin baseline"),
        Binding("a", "toggle_params", "All params"),
        Binding("t", "next_threshold", "Threshold"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(self, source: Source, *, threshold: float = DEFAULT_THRESHOLD, all_params: bool = False,
                 name: Optional[str] = None, id: Optional[str] = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(name=name, id=id)
        self.source = source
        self.comparison: Optional[Comparison] = None
        self.threshold = threshold
        self.all_params = all_params
        self.included: set[int] = set()

    def compose(self) -> ComposeResult:
        yield Static("Reading run files…", id="compare-title")
        with Horizontal(id="compare-top"):
            yield SelectionList[int](id="compare-runs")
            yield PlotextPlot(id="compare-loss")
            yield PlotextPlot(id="compare-acc")
        with TabbedContent(id="compare-tabs"):
            with TabPane("Summary", id="tab-summary"):
                with VerticalScroll():
                    yield DataTable(id="compare-table", cursor_type="column", zebra_stripes=True)
                    yield Static(id="compare-observations")
            with TabPane("Per epoch", id="tab-epochs"):
                yield DataTable(id="epoch-table", zebra_stripes=True)
            with TabPane("Grid", id="tab-grid"):
                yield Static(id="compare-grid")
            with TabPane("Unreadable", id="tab-unreadable"):
                yield Static(id="compare-unreadable")
        yield Footer()

    def on_mount(self) -> None:
        if isinstance(self.source, Comparison):
            self.post_message(RunsLoaded(self.source))
        else:
            self.load_runs(list(self.source))

    @work(thread=True, exclusive=True)
    def load_runs(self, items: list[Union[Path, str, RunFile]]) -> None:
        files = [item if isinstance(item, RunFile) else load_run_file(Path(item)) for item in items]
        self.post_message(RunsLoaded(Comparison.from_files(files, threshold=self.threshold, all_params=self.all_params)))

    @on(RunsLoaded)
    def show_runs(self, message: RunsLoaded) -> None:
        self.comparison = message.comparison
        self.threshold = self.comparison.threshold
        self.all_params = self.comparison.all_params
        self.included = {r.index for r in self.comparison.runs}
        runs = self.query_one("#compare-runs", SelectionList)
        runs.clear_options()
        runs.add_options([
            Selection(Text(f"{r.label}  {r.status}", style=run_markup_colour(r.index - 1)), r.index, True) for r in self.comparison.runs
        ])
        if runs.option_count:
            runs.highlighted = 0
        self.refresh_views()

    @on(SelectionList.SelectedChanged, "#compare-runs")
    def runs_selected(self, message: SelectionList.SelectedChanged) -> None:
        if self.comparison is not None:
            self.included = set(message.selection_list.selected)
            self.refresh_views()

    # ---- actions -------------------------------------------------------------------------------
    def highlighted_run(self) -> Optional[int]:
        runs = self.query_one("#compare-runs", SelectionList)
        if runs.highlighted is None or runs.option_count == 0:
            return None
        return runs.get_option_at_index(runs.highlighted).value

    def action_pin_baseline(self) -> None:
        if self.comparison is None:
            return
        index = self.highlighted_run()
        self.comparison.baseline = None if index is None or index == self.comparison.baseline else index
        self.refresh_views()

    def action_toggle_params(self) -> None:
        if self.comparison is not None:
            self.comparison.all_params = self.all_params = not self.all_params
            self.refresh_views()

    def action_next_threshold(self) -> None:
        if self.comparison is not None:
            later = [t for t in THRESHOLDS if t > self.threshold]
            self.comparison.threshold = self.threshold = later[0] if later else THRESHOLDS[0]
            self.refresh_views()

    def action_back(self) -> None:
        self.dismiss()  # the app that pushed this screen decides what comes next

    # ---- views ---------------------------------------------------------------------------------
    def shown(self) -> Comparison:
        """The comparison restricted to the runs ticked in the list."""
        full = self.comparison
        runs = [r for r in full.runs if r.index in self.included]
        baseline = full.baseline if full.baseline in self.included else None
        return Comparison(runs=runs, unreadable=full.unreadable, threshold=full.threshold,
                          all_params=full.all_params, baseline=baseline)

    def refresh_views(self) -> None:
        c = self.shown()
        title = f"{len(c.runs)} of {len(self.comparison.runs)} run(s) shown"
        if c.baseline_run:
            title += f" · baseline {c.baseline_run.label}"
        if c.unreadable:
            title += f" · {len(c.unreadable)} unreadable"
        title += f" · threshold {c.threshold:g}% · {'all' if c.all_params else 'differing'} hyperparameters"
        self.query_one("#compare-title", Static).update(title)
        self.fill_table(c)
        self.fill_epochs(c)
        grid = c.grid()
        self.query_one("#compare-grid", Static).update(
            Text(f"Best test accuracy by {grid.row_param} × {grid.col_param}\n\n" + fmt.text_table(*grid.table()))
            if grid else "The shown runs do not form a sweep over exactly two hyperparameters."
        )
        notes = c.observations()
        self.query_one("#compare-observations", Static).update(
            Text("Observations\n" + "\n".join(f"• {n}" for n in notes)) if notes else ""
        )
        self.query_one("#compare-unreadable", Static).update(
            Text("\n".join(f"{f.path}\n    {f.error}" for f in c.unreadable)) if c.unreadable else "Every file was read."
        )
        self.draw_charts(c)

    def run_header(self, c: Comparison, run: RunColumn, suffix: str = "") -> Text:
        label = run.label + (" ★" if run.index == c.baseline else "") + suffix
        return Text(label, style=f"bold {run_markup_colour(run.index - 1)}")

    def fill_table(self, c: Comparison) -> None:
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        table.add_column("", key="name")
        for r in c.runs:
            table.add_column(self.run_header(c, r), key=f"run-{r.index}")
        table.add_rows(c.table_rows())

    def fill_epochs(self, c: Comparison) -> None:
        table = self.query_one("#epoch-table", DataTable)
        table.clear(columns=True)
        table.add_column("Epoch")
        for r in c.runs:
            table.add_column(self.run_header(c, r, ": initial → final loss"))
            table.add_column(Text("test acc", style=run_markup_colour(r.index - 1)))
        table.add_rows(c.epoch_table_rows())

    def draw_charts(self, c: Comparison) -> None:
        loss_plot = self.query_one("#compare-loss", PlotextPlot)
        acc_plot = self.query_one("#compare-acc", PlotextPlot)
        points = max(20, loss_plot.size.width - 10)
        plt = loss_plot.plt
        plt.clear_figure()
        plt.title("Training loss (smoothed, log scale)")
        plt.xlabel("epoch")
        curves = [(r, *loss_curve(r.record, points=points)) for r in c.runs]
        curves = [(r, xs, ys) for r, xs, ys in curves if xs and min(ys) > 0]
        if curves:  # plotext cannot draw an empty log-scale plot
            plt.yscale("log")
        for r, xs, ys in curves:
            plt.plot(xs, ys, color=run_colour(r.index - 1), marker="braille")
        loss_plot.refresh()
        plt = acc_plot.plt
        plt.clear_figure()
        plt.title(f"Test accuracy % (threshold {c.threshold:g}%)")
        plt.xlabel("epoch")
        for r in c.runs:
            xs, ys = accuracy_curve(r.record)
            if xs:
                plt.plot(xs, ys, color=run_colour(r.index - 1), marker="braille")
        acc_plot.refresh()

    def on_resize(self) -> None:
        if self.comparison is not None:
            self.draw_charts(self.shown())
