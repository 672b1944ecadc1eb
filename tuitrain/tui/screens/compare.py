"""The compare screen: saved runs side by side, in views one key apart: charts (with the run list),
summary table, observations, per-epoch table, grid and unreadable files.

Self-contained: push it from any app (`app.push_screen(CompareScreen(paths))`). Files are read in a
thread worker; every figure comes from tuitrain.compare, the same model as `tuitrain compare --no-ui`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Resize
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
    group_curve,
    loss_curve,
)
from tuitrain.monitor import ACCURACY, EPOCH_FIELDS, LOSS, LR, downsample, epoch_value
from tuitrain.records import RunRecord
from tuitrain.tui.messages import ComparisonLoaded, ReportWritten
from tuitrain.tui.screens.dialogs import MetricPicker
from tuitrain.tui.screens.run import STEP_RANGES
from tuitrain.tui.widgets.charts import (
    RunStyle,
    distinct_styles,
    draw_accuracy,
    draw_loss,
    int_ticks,
    run_style,
)
from tuitrain.tui.widgets.too_small import SizedScreen, TooSmall

THRESHOLDS = (90.0, 95.0, 97.0, 98.0, 99.0)
VIEWS = ("tab-charts", "tab-summary", "tab-observations", "tab-epochs", "tab-grid", "tab-unreadable")
"""The views in key order: 1 shows the first."""

Curve = tuple[list[float], list[float]]


def step_curve(record: RunRecord, name: str, points: int) -> Curve:
    """A named per-step series of a run as logged, downsampled per column; empty where it has none."""
    series = record.series.get(name)
    if series is None or not len(series):
        return [], []
    return downsample(series.steps, series.values, points)


def epoch_curve(record: RunRecord, name: str) -> Curve:
    """A per-epoch figure of a run: (epochs, values) where it logged or recorded it."""
    points = [(float(e.epoch), v) for e in record.epochs if (v := epoch_value(e, name)) is not None]
    return [x for x, _ in points], [y for _, y in points]


def last_part(xs: list[float], ys: list[float], fraction: float) -> Curve:
    """The points in the latest `fraction` of x (all of them for 1.0)."""
    if fraction >= 1 or not xs:
        return xs, ys
    start = xs[-1] - (xs[-1] - xs[0]) * fraction
    kept = [(x, y) for x, y in zip(xs, ys) if x >= start]
    return [x for x, _ in kept], [y for _, y in kept]


Line = tuple[list[float], list[float], RunStyle]
Source = Comparison | Sequence[Path | str | RunFile]


def visible_columns(table: DataTable) -> tuple[int, int]:
    """(first, last) 1-based numbers of the scrolling columns wholly in view (0, 0 when none)."""
    columns = table.ordered_columns[table.fixed_columns :]
    fixed = sum(c.get_render_width(table) for c in table.ordered_columns[: table.fixed_columns])
    left, right = table.scroll_x, table.scroll_x + table.scrollable_content_region.width - fixed
    shown, x = [], 0
    for number, column in enumerate(columns, start=1):
        width = column.get_render_width(table)
        if x >= left and x + width <= right:
            shown.append(number)
        x += width
    return (shown[0], shown[-1]) if shown else (0, 0)


def runs_in_view(total: int, columns: tuple[int, int], per_run: int) -> str:
    """'runs 1–3 of 4 in full (←/→ for the others)' where not all of a table's `total` runs fit; `columns`: the
    first and last of its scrolling columns wholly in view, `per_run` of them for each run. A run half in view
    does not count (it was said to be in view, while its other half was out of sight)."""
    if not total:
        return "No run shown."
    first_column, last_column = columns
    if (first_column, last_column) == (1, total * per_run):
        return f"{total} run(s)"
    first = (first_column - 1 + per_run - 1) // per_run + 1 if first_column else 0
    last = last_column // per_run
    if not first or first > last:
        shown = f"no run of {total} wholly in view"
    elif first == last:
        shown = f"run {first} of {total} in full"
    else:
        shown = f"runs {first}–{last} of {total} in full"
    return f"{shown} (←/→ for the others)"


def without_path(error: str, path: Path) -> str:
    """A file's error without the path it starts with (the path is shown already)."""
    return error.removeprefix(f"{path}: ")


class CompareScreen(SizedScreen):
    """Runs side by side. Space: include/leave out a run; b: pin it as baseline; a: all hyperparameters."""

    CSS_PATH = "compare.tcss"
    AUTO_FOCUS = "#compare-runs"
    BINDINGS = [
        Binding("1", "show_view(0)", "Views", key_display="1-6"),
        *(Binding(str(n + 1), f"show_view({n})", show=False) for n in range(1, len(VIEWS))),
        Binding("b", "pin_baseline", "Baseline"),
        Binding("a", "toggle_params", "All params"),
        Binding("t", "next_threshold", "Threshold"),
        Binding("r", "export_report", "Report"),
        Binding("escape", "back", "Back"),
        # not in the footer (it fits 80 columns as it is): the help lists them
        Binding("m", "pick_metric", "Metric", show=False),
        Binding("l", "toggle_log", "Log", show=False),
        Binding("z", "zoom_steps", "Step range", show=False),
    ]
    COMPACT_FOOTER = True
    NARROW_FOOTER_SPARES = frozenset({"next_threshold", "export_report"})

    def __init__(
        self,
        source: Source,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        all_params: bool = False,
        name: str | None = None,
        id: str | None = None,
    ) -> None:  # noqa: A002 - Textual's name
        super().__init__(name=name, id=id)
        self.source = source
        self.comparison: Comparison | None = None
        self.threshold = threshold
        self.all_params = all_params
        self.included: set[int] = set()
        self.run_styles: dict[int, RunStyle] = {}
        """Each run's colour and marker, by its number in the comparison."""
        self.step_metric = LOSS
        """The per-step series the upper chart draws (m picks another)."""
        self.epoch_metric: str | None = None
        """The per-epoch figure the lower chart draws and the runs are ranked by; None: test accuracy where the runs
        measure it, else the comparison's ranking metric."""
        self.log_scale: bool | None = None
        """The upper chart's scale: None, log where every value is positive (l toggles)."""
        self.last_steps = 1.0
        """The fraction of the steps drawn, the latest ones (z cycles)."""

    def compose(self) -> ComposeResult:
        yield Static("Reading run files…", id="compare-title", classes="screen-title")
        with TabbedContent(id="compare-tabs"):
            with TabPane("1 Charts", id="tab-charts"), Horizontal(id="compare-top"):
                yield SelectionList[int](id="compare-runs")
                with Vertical(id="compare-charts"):
                    yield PlotextPlot(id="compare-loss")
                    yield PlotextPlot(id="compare-acc")
            with TabPane("2 Summary", id="tab-summary"):
                yield Static(id="summary-hint", classes="hint")
                yield DataTable(id="compare-table", cursor_type="column", zebra_stripes=True, fixed_columns=1)
            with TabPane("3 Observations", id="tab-observations"), VerticalScroll():
                yield Static(id="compare-observations")
            with TabPane("4 Per epoch", id="tab-epochs"):
                yield Static(id="epochs-hint", classes="hint")
                yield DataTable(id="epoch-table", zebra_stripes=True, fixed_columns=1)
            with TabPane("5 Grid", id="tab-grid"), VerticalScroll():
                yield Static(id="compare-grid")
            with TabPane("6 Unreadable", id="tab-unreadable"), VerticalScroll():
                yield Static(id="compare-unreadable")
        yield Footer()
        yield TooSmall()

    def on_mount(self) -> None:
        if isinstance(self.source, Comparison):
            self.post_message(ComparisonLoaded(self.source))
        else:
            self.load_runs(list(self.source))

    @work(thread=True, exclusive=True)
    def load_runs(self, items: list[Path | str | RunFile]) -> None:
        files = [item if isinstance(item, RunFile) else load_run_file(Path(item)) for item in items]
        self.post_message(
            ComparisonLoaded(Comparison.from_files(files, threshold=self.threshold, all_params=self.all_params))
        )

    @on(ComparisonLoaded)
    def show_runs(self, message: ComparisonLoaded) -> None:
        self.comparison = message.comparison
        self.threshold = self.comparison.threshold
        self.all_params = self.comparison.all_params
        self.included = {r.index for r in self.comparison.runs}
        runs = self.comparison.runs
        styles = distinct_styles([run_style(r.record.id, r.record.run_index) for r in runs])
        self.run_styles = {r.index: style for r, style in zip(runs, styles)}
        run_list = self.query_one("#compare-runs", SelectionList)
        run_list.clear_options()
        run_list.add_options([Selection(self.run_entry(r), r.index, True) for r in runs])
        if run_list.option_count:
            run_list.highlighted = 0
        if not runs and self.comparison.unreadable:
            self.query_one(TabbedContent).active = "tab-unreadable"
        self.refresh_views()

    def run_entry(self, run: RunColumn) -> Text:
        """A run in the list: its line as drawn in the charts, its label and status (the charts' legend)."""
        style = self.run_styles[run.index]
        entry = style.swatch()
        entry.append(f" {run.label}", style=style.markup)
        entry.append(f" {run.status}", style="dim")
        return entry

    @on(SelectionList.SelectedChanged, "#compare-runs")
    def runs_selected(self, message: SelectionList.SelectedChanged) -> None:
        if self.comparison is not None:
            self.included = set(message.selection_list.selected)
            self.refresh_views()

    # ---- actions -------------------------------------------------------------------------------
    def highlighted_run(self) -> int | None:
        """The run under the cursor: in the summary table, its column; elsewhere, the run list's entry."""
        if self.query_one(TabbedContent).active == "tab-summary":
            return self.summary_cursor_run()
        runs = self.query_one("#compare-runs", SelectionList)
        if runs.highlighted is None or runs.option_count == 0:
            return None
        return runs.get_option_at_index(runs.highlighted).value

    def action_show_view(self, number: int) -> None:
        self.query_one(TabbedContent).active = VIEWS[number]

    @on(TabbedContent.TabActivated)
    def view_shown(self, event: TabbedContent.TabActivated) -> None:
        # the view's main widget takes the keys: the run list, a table, or the scrolling text
        pane = event.pane
        target = next(iter(pane.query("SelectionList, DataTable, VerticalScroll")), None)
        if target is not None:
            target.focus()
        if pane.id == "tab-charts" and self.comparison is not None:
            self.call_after_refresh(self.draw_charts, self.shown())
        self.call_after_refresh(self.show_hints)

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

    def action_export_report(self) -> None:
        c = self.shown()
        if not c.runs:
            self.notify("No run shown: tick runs in the list first.", severity="warning")
            return
        self.notify("Writing the report…")
        self.write_report([r.file for r in c.runs], c.threshold)

    @work(thread=True, exclusive=True, group="report")
    def write_report(self, files: list[RunFile], threshold: float) -> None:
        """The report of the shown runs as report.md (figures beside it) in their folder when they share one,
        else in the current folder."""
        from tuitrain.core.errors import TuitrainError
        from tuitrain.report import write_report

        folders = {f.path.resolve().parent for f in files}
        output = (folders.pop() if len(folders) == 1 else Path.cwd()) / "report.md"
        try:
            write_report(files, output, threshold=threshold)
        except TuitrainError as exc:
            self.post_message(ReportWritten(None, str(exc)))
        else:
            self.post_message(ReportWritten(output))

    @on(ReportWritten)
    def report_written(self, message: ReportWritten) -> None:
        if message.path is None:
            self.notify(f"No report: {message.error}", severity="error", timeout=10)
        else:
            self.notify(f"Wrote the report of the shown runs to {message.path}", timeout=10)

    def action_back(self) -> None:
        self.dismiss()  # the app that pushed this screen decides what comes next

    # ---- views ---------------------------------------------------------------------------------
    def shown(self) -> Comparison:
        """The comparison restricted to the runs ticked in the list."""
        full = self.comparison
        assert full is not None  # the views are drawn only once a comparison is loaded
        runs = [r for r in full.runs if r.index in self.included]
        baseline = full.baseline if full.baseline in self.included else None
        return Comparison(
            runs=runs,
            unreadable=full.unreadable,
            threshold=full.threshold,
            all_params=full.all_params,
            baseline=baseline,
            # the learning rate is drawn, not ranked by: no value of it is better
            metric=self.epoch_metric if self.epoch_metric not in (ACCURACY, LR) else None,
        )

    def refresh_views(self) -> None:
        c = self.shown()
        assert self.comparison is not None  # shown() holds it too
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
            if grid
            else "The shown runs do not form a sweep over exactly two hyperparameters."
        )
        notes = c.observations()
        self.query_one("#compare-observations", Static).update(
            Text("\n".join(f"• {n}" for n in notes)) if notes else "No observations about the shown runs."
        )
        unreadable = Text()
        for f in c.unreadable:
            unreadable.append(f"{f.path}\n", style="bold")
            unreadable.append(f"    {without_path(f.error or '', f.path)}\n")
        self.query_one("#compare-unreadable", Static).update(unreadable if c.unreadable else "Every file was read.")
        self.call_after_refresh(self.draw_charts, c)  # sized to the charts once laid out
        self.call_after_refresh(self.show_hints)

    def run_header(self, c: Comparison, run: RunColumn, suffix: str = "") -> Text:
        label = run.label + (" ★" if run.index == c.baseline else "") + suffix
        return Text(label, style=f"bold {self.run_styles[run.index].markup}")

    def summary_cursor_run(self) -> int | None:
        """The run whose column of the summary table is under the cursor (None: no run there)."""
        table = self.query_one("#compare-table", DataTable)
        if not table.row_count or table.cursor_column <= 0:
            return None
        key = table.ordered_columns[table.cursor_column].key.value or ""
        return int(key.removeprefix("run-")) if key.startswith("run-") else None

    def fill_table(self, c: Comparison) -> None:
        """The summary table, its cursor on the same run as before (else on the first run's column)."""
        table = self.query_one("#compare-table", DataTable)
        under_cursor = self.summary_cursor_run()
        table.clear(columns=True)
        table.add_column("", key="name")
        for r in c.runs:
            table.add_column(self.run_header(c, r), key=f"run-{r.index}")
        table.add_rows(c.table_rows())
        indices = [r.index for r in c.runs]
        if indices:
            table.move_cursor(column=indices.index(under_cursor) + 1 if under_cursor in indices else 1)

    @on(DataTable.ColumnHighlighted, "#compare-table")
    def keep_cursor_on_a_run(self, event: DataTable.ColumnHighlighted) -> None:
        """The first column names the rows: the cursor, which says the run that b pins, stays on the runs'."""
        table = event.data_table  # its cursor now: a rebuilt table posts column 0, then the column it moved to
        if table.cursor_column == 0 and len(table.columns) > 1:
            table.move_cursor(column=1)

    def fill_epochs(self, c: Comparison) -> None:
        table = self.query_one("#epoch-table", DataTable)
        table.clear(columns=True)
        table.add_column("Epoch")
        for r in c.runs:
            table.add_column(self.run_header(c, r, ": initial → final loss"))
            table.add_column(Text("test acc", style=self.run_styles[r.index].markup))
        table.add_rows(c.epoch_table_rows())

    @on(DataTable.ColumnHighlighted)
    def show_hints(self) -> None:
        """Say which runs are wholly in view when they do not all fit (and how to reach the others), and in the
        summary which run b pins: the one under the cursor."""
        for table_id, hint_id, per_run in (("#compare-table", "#summary-hint", 1), ("#epoch-table", "#epochs-hint", 2)):
            table = self.query_one(table_id, DataTable)
            total = (len(table.columns) - 1) // per_run
            hint_widget = self.query_one(hint_id, Static)
            hint = runs_in_view(total, visible_columns(table), per_run)
            pinned = self.summary_cursor_run() if per_run == 1 else None
            if pinned is not None and self.comparison is not None:
                label = next(r.label for r in self.comparison.runs if r.index == pinned)
                verb = "unpins" if pinned == self.comparison.baseline else "pins"
                words = f" · b {verb} {{}} as baseline"
                room = hint_widget.content_size.width - len(hint) - len(words.format(""))
                hint += words.format(label if len(label) <= room else label[: max(room - 1, 1)] + "…")
            text = Text(hint, style="dim")
            if hint_widget.content_size.width:
                text.truncate(hint_widget.content_size.width, overflow="ellipsis")
            hint_widget.update(text)

    def metric_names(self, c: Comparison) -> tuple[list[str], list[str]]:
        """The per-step series and per-epoch figures the shown runs logged."""
        steps: dict[str, None] = {LOSS: None}
        for r in c.runs:
            steps.update(dict.fromkeys(n for n in r.record.series if n != r.record.loss_series))
        recorded = [n for n in EPOCH_FIELDS if any(getattr(e, n) is not None for r in c.runs for e in r.record.epochs)]
        epochs = ([ACCURACY] if c.measures_accuracy() else []) + list(dict.fromkeys(recorded + c.extra_metrics()))
        return list(steps), epochs or [ACCURACY]

    def shown_epoch_metric(self, c: Comparison) -> str:
        if self.epoch_metric is not None:
            return self.epoch_metric
        return ACCURACY if c.measures_accuracy() else (c.ranking_metric() or ACCURACY)

    def draw_charts(self, c: Comparison) -> None:
        loss_plot = self.query_one("#compare-loss", PlotextPlot)
        acc_plot = self.query_one("#compare-acc", PlotextPlot)
        points = max(20, loss_plot.size.width - 10)
        if self.step_metric == LOSS:
            loss_plot.border_title = "Training loss (smoothed"
            series = self.chart_series(c, lambda record: loss_curve(record, points=points))
            xlabel = "epoch"
        else:
            loss_plot.border_title = f"{fmt.printable(self.step_metric)} (as logged"
            series = [(*step_curve(r.record, self.step_metric, points), self.run_styles[r.index]) for r in c.runs]
            xlabel = "step"
        series = [(*last_part(xs, ys, self.last_steps), style) for xs, ys, style in series]
        log_scale = self.log_scale
        if log_scale is None:
            log_scale = all(min(ys) > 0 for xs, ys, _ in series if xs)
        loss_plot.border_title += (", log scale" if log_scale else "") + (
            f", last {self.last_steps:.0%})" if self.last_steps < 1 else ")"
        )
        epoch_metric = self.shown_epoch_metric(c)
        if epoch_metric == ACCURACY:
            acc_plot.border_title = f"Test accuracy % (threshold {c.threshold:g}%)"
        elif epoch_metric == LR:
            acc_plot.border_title = "Learning rate per epoch (warm-up and schedule)"
        else:
            goal = "lower" if c.goal(epoch_metric) == "min" else "higher"
            acc_plot.border_title = f"{fmt.printable(epoch_metric)} per epoch ({goal} is better)"
        if c.has_repeats() and self.step_metric == LOSS:
            loss_plot.border_title += " · per group: mean of seeds, min and max fainter"
            acc_plot.border_title += " · mean of seeds, min and max fainter"
        draw_loss(loss_plot.plt, series, log_scale=log_scale, xlabel=xlabel, height=loss_plot.content_size.height)
        last = max([0.0, *(max(xs) for xs, _, _ in series if xs)])
        first = min([last, *(min(xs) for xs, _, _ in series if xs)])
        if last:
            ticks = int_ticks(math.floor(first), math.ceil(last), count=min(math.ceil(last - first) + 1, 8))
            loss_plot.plt.xticks(ticks)  # type: ignore[arg-type]  # stub says list[float]; plotext takes ints
        loss_plot.refresh()
        if epoch_metric == ACCURACY:
            curves = self.chart_series(c, accuracy_curve)
        else:
            curves = self.chart_series(c, lambda record: epoch_curve(record, epoch_metric))
        last_epoch = max([1, *(int(max(xs)) for xs, _, _ in curves if xs)])
        if epoch_metric == ACCURACY:
            draw_accuracy(acc_plot.plt, curves, last_epoch=last_epoch, height=acc_plot.content_size.height)
        else:
            draw_loss(acc_plot.plt, curves, log_scale=False, xlabel="epoch", height=acc_plot.content_size.height)
            acc_plot.plt.xticks(int_ticks(1, last_epoch, count=min(last_epoch, 8)))  # type: ignore[arg-type]
        acc_plot.refresh()

    def action_pick_metric(self) -> None:
        if self.comparison is None:
            return
        c = self.shown()
        steps, epochs = self.metric_names(c)

        def picked(choice: tuple[str, str] | None) -> None:
            if choice is None:
                return
            kind, name = choice
            if kind == "step":
                self.step_metric = name
            else:
                self.epoch_metric = name  # the lower chart, and what the summary and observations rank by
            self.refresh_views()

        logged = dict.fromkeys(r.record.loss_series for r in c.runs if r.record.loss_series not in (None, LOSS))
        labels = {LOSS: f"{LOSS} ({', '.join(n for n in logged if n)})"} if logged else {}
        self.app.push_screen(MetricPicker(steps, epochs, ("step", self.step_metric), labels), picked)

    def action_toggle_log(self) -> None:
        if self.comparison is not None:
            current = self.log_scale
            if current is None:  # as drawn now: the automatic choice
                shown = self.query_one("#compare-loss", PlotextPlot).border_title or ""
                current = "log scale" in str(shown)
            self.log_scale = not current
            self.draw_charts(self.shown())

    def action_zoom_steps(self) -> None:
        if self.comparison is not None:
            self.last_steps = STEP_RANGES[(STEP_RANGES.index(self.last_steps) + 1) % len(STEP_RANGES)]
            self.draw_charts(self.shown())

    def chart_series(
        self, c: Comparison, curve: Callable[[RunRecord], Curve]
    ) -> list[tuple[list[float], list[float], RunStyle]]:
        """A line per run; runs that differ only by seed as one line, their mean, in the colour of the group's first
        run, with their minimum and maximum as fainter lines of that colour (plotext cannot fill a band)."""
        if not c.has_repeats():
            return [(*curve(r.record), self.run_styles[r.index]) for r in c.runs]
        series: list[Line] = []
        for g in c.groups():
            style = self.run_styles[g.runs[0].index]
            xs, mean, low, high = group_curve([r.record for r in g.runs], curve)
            if g.n > 1:
                faint = RunStyle(tuple(round(v * 0.45) for v in style.colour), style.marker)  # type: ignore[arg-type]
                series += [(xs, low, faint), (xs, high, faint)]
            series.append((xs, mean, style))
        return series

    def on_resize(self, event: Resize) -> None:
        if self.comparison is not None:
            self.draw_charts(self.shown())
            self.call_after_refresh(self.show_hints)
