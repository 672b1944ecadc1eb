"""The home screen: presets (with estimated time on this device) and saved runs, newest first.

Runs that another process is training right now are marked live; Enter on one watches it, Enter on
any other opens it in the compare screen. `/` filters the runs (text, tag:NAME, status:NAME); d trashes the
selected runs (or the highlighted one) after asking, u brings back what d trashed; l, t and n rename, tag and
annotate them (tuitrain.housekeeping: a live run is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import DescendantFocus, Resize
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from tuitrain import format as fmt
from tuitrain.catalog import RunFile, scan_runs
from tuitrain.core import cores
from tuitrain.core.errors import TuitrainError
from tuitrain.housekeeping import (
    check_label,
    edit_runs,
    live_reason,
    parse_tag_changes,
    relabel,
    renote,
    restore_runs,
    retag,
    trash_folder,
    trash_runs,
)
from tuitrain.presets import Preset, Traversable, load_preset_file, options_text
from tuitrain.records import RunRecord
from tuitrain.tui.messages import (
    DeviceKnown,
    EstimateReady,
    RunsLoaded,
    StartEstimated,
    StartPreset,
    WatchRuns,
)
from tuitrain.tui.screens.compare import CompareScreen, without_path
from tuitrain.tui.screens.dialogs import ConfirmScreen, ErrorScreen, LongRunScreen, TextInputScreen
from tuitrain.tui.widgets.too_small import SizedScreen, TooSmall

DATE_FORMAT = "%Y-%m-%d %H:%M"
MIN_LABEL_WIDTH = 12
STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "interrupted": "yellow",
    "crashed": "bold red",
    "diverged": "red",
    "failed": "bold red",
    "unreadable": "dim red",
}
SELECTED_MARK = "✓"
LIVE = "● live"
FILTER_PLACEHOLDER = "filter: words, tag:NAME, status:live … (Enter keeps it, Esc clears)"
REFRESH_S = 3.0
LONG_CPU_RUN_S = 3600.0
"""A preset estimated to train this long on a CPU is not started without offering its quick variant."""
QUICK_VARIANT = {"subset": 5000, "epochs": 2}
"""The quick variant: the same runs on the first 5,000 training images for 2 epochs."""
"""How often the runs folder is checked for changes (a stat per folder; rescanned only when one changed)."""


def run_matches(run: RunFile, query: str) -> bool:
    """Whether a saved run passes the home screen's filter: every word of `query` must match, case aside.
    `tag:NAME` (or `#NAME`) matches a tag that starts so, `status:NAME` a status (live for a running one);
    any other word is looked for in the label, preset, group, tags, note, status and file path."""
    r = run.record
    status = "live" if run.status == "running" else run.status
    tags = [t.lower() for t in r.tags] if r is not None else []
    fields = [status, run.status, str(run.path)]
    if r is not None:
        fields += [r.label, r.original_label or "", r.preset or "", r.group or "", r.notes or "", *r.tags]
    text = "\n".join(fields).lower()
    for word in query.lower().split():
        if word.startswith(("tag:", "#")):
            name = word.split(":", 1)[1] if word.startswith("tag:") else word[1:]
            if not any(t.startswith(name) for t in tags):
                return False
        elif word.startswith("status:"):
            name = word.split(":", 1)[1]
            if not (status.startswith(name) or run.status.startswith(name)):
                return False
        elif word not in text:
            return False
    return True


def runs_signature(runs_dir: Path) -> tuple:
    """Modification times of the runs folder and its folders: an atomic rewrite of a run file changes them."""
    try:
        folders = [runs_dir, *(d for d in runs_dir.iterdir() if d.is_dir())]
        return tuple(sorted((str(d), d.stat().st_mtime_ns) for d in folders))
    except OSError:
        return ()


def preset_problem(error: str, path: Path | Traversable | None) -> str:
    """A preset file's error with the reason first and the file last ("path:line: reason" -> "reason (file:line)")."""
    if path is not None and error.startswith(str(path)):
        where, _, reason = error[len(str(path)) :].partition(": ")
        if reason:
            return f"{reason} ({path.name}{where})"
    return error


def pending_cells() -> list[Text]:
    """A preset's Jobs and Est. time cells until its estimate comes."""
    return [Text("…", justify="right"), Text("…", justify="right")]


def fit_cell(cell: str | Text, width: int) -> str | Text:
    if isinstance(cell, Text):
        cell = cell.copy()
        cell.truncate(width, overflow="ellipsis")
        return cell
    return fmt.cut(cell, width)


def fill_fitted(table: DataTable, headers: list[tuple[str, str]], rows: dict[str, list], least: dict[str, int]) -> None:
    """Rebuild `table` with each column as wide as its widest cell (at least `least[key]`; the first
    column's mark exactly that) and the last column as wide as the room left, its cells cut to it: the
    other columns always stay on screen. (Widths are set before the rows: a table that measured its
    columns only once idle could draw its first rows with the headers' widths.)"""
    row = table.cursor_row
    widths = [
        least.get(key, 0)
        if key == headers[0][1] and key in least
        else max([len(title), least.get(key, 0), *(len(str(cells[i])) for cells in rows.values())])
        for i, (title, key) in enumerate(headers)
    ]
    room = (table.size.width or table.app.size.width) - 2  # the vertical scrollbar
    fixed = sum(w + 2 for w in widths[:-1])  # a space either side of each cell
    widths[-1] = max(min(widths[-1], room - fixed - 2), MIN_LABEL_WIDTH)
    table.clear(columns=True)
    for (title, key), width in zip(headers, widths):
        table.add_column(title, key=key, width=width)
    for key, cells in rows.items():
        table.add_row(*cells[:-1], fit_cell(cells[-1], widths[-1]), key=key)
    if rows:
        table.move_cursor(row=min(row, len(rows) - 1))


def watch_target(run: RunFile, runs_dir: Path) -> Path:
    """What to watch for a live run: its whole invocation folder when it has one, else the file."""
    folder = run.path.parent
    if run.record is not None and run.record.invocation and folder.resolve() != Path(runs_dir).resolve():
        return folder
    return run.path


class HomeScreen(SizedScreen[None]):
    CSS_PATH = "home.tcss"
    BINDINGS = [
        Binding("space", "toggle_run", "Select run"),
        Binding("c", "compare", "Compare"),
        Binding("r", "reload_runs", "Reload runs"),
        Binding("j", "next_jobs", "Jobs"),
        Binding("slash", "filter_runs", "Filter", key_display="/"),
        Binding("d", "trash_runs", "Trash"),
        Binding("u", "restore_trashed", "Undo trash", show=False),
        Binding("l", "label_run", "Label", show=False),
        Binding("t", "tag_runs", "Tag", show=False),
        Binding("n", "note_runs", "Note", show=False),
        Binding("escape", "close_filter", "Clear filter", show=False),
    ]

    def __init__(
        self,
        presets: dict[str, Path | Traversable],
        runs_dir: Path,
        overrides: dict,
        estimate_now: bool = True,
        *,
        jobs: int | Literal["auto"] | None = None,
        gpus: list[int] | None = None,
        start: str | None = None,
    ) -> None:
        """`jobs`: the runs to train at once, as --jobs says (None: each preset's `jobs`); `gpus`: as --gpus;
        `start`: a preset (name or file) to train at once, as if picked here (--preset): estimated first, so that
        hours on a CPU are asked about as Enter asks."""
        super().__init__()
        self.start = start
        self.jobs = jobs
        self.auto_jobs: Literal["auto"] | None = "auto" if jobs == "auto" else None
        """What "auto" stands for in the choices: each preset's `jobs` (None), or auto over them (--jobs auto)."""
        self.gpus = gpus
        self.planned_jobs: dict[str, int] = {}
        """The runs each preset would train at once with `jobs` (what its estimate assumes), once known."""
        self.preset_paths = presets
        self.runs_dir = runs_dir
        self.overrides = overrides
        self.estimate_now = estimate_now
        self.presets: dict[str, Preset] = {}
        self.estimated: set[str] = set()
        self.run_files: list[RunFile] = []
        self.selected_runs: list[Path] = []
        """Run files picked with space, in the order picked: what the compare screen gets."""
        self.signature: tuple = ()
        self.preset_errors: dict[str, str] = {}
        self.preset_rows: dict[str, list] = {}
        self.seconds: dict[str, float] = {}
        """Each preset's estimated training time, once known."""
        self.device = ""
        """Each preset's cells: name, runs, estimated time, title (or why the file is invalid)."""
        self.filter_text = ""
        """The runs filter (`/`): only runs that match it (run_matches) are listed."""
        self.last_trashed: list[Path] = []
        """Where the runs that d last trashed lie in the trash: what u restores."""
        self.completed_runs: set[Path] | None = None
        """Completed run files at the last load: a new one updates the estimates (its measured speed is cached)."""

    def compose(self) -> ComposeResult:
        yield Static("tuitrain — train MNIST classifiers and watch them", id="home-title", classes="screen-title")
        yield Static("Device: …", id="device")
        overrides = Static(Text(self.overrides_note()), id="overrides")
        overrides.display = bool(self.overrides)
        yield overrides
        yield Static(self.presets_title(), classes="section", id="presets-title")
        yield DataTable(id="presets", cursor_type="row", zebra_stripes=True)
        yield Static(self.runs_title(), classes="section", id="runs-title")
        runs_filter = Input(placeholder=FILTER_PLACEHOLDER, id="runs-filter")
        runs_filter.display = False
        yield runs_filter
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="details")
        yield Footer()
        yield TooSmall()

    def on_mount(self) -> None:
        table = self.query_one("#presets", DataTable)
        for name, path in self.preset_paths.items():
            try:
                preset = load_preset_file(path)
                count = str(len(preset.expand(self.overrides)))
                self.presets[name] = preset
                self.preset_rows[name] = [name, Text(count, justify="right"), *pending_cells(), preset.title]
            except TuitrainError as exc:
                self.preset_errors[name] = str(exc)
                problem = preset_problem(str(exc), path)
                self.preset_rows[name] = [name, "–", "–", "–", Text(f"invalid: {problem}", style="red", no_wrap=True)]
        self.fill_presets_table()
        table.focus()
        self.set_interval(REFRESH_S, self.refresh_runs_if_changed)
        if self.start is not None:
            self.estimate_start(self.start)
        elif self.estimate_now:
            self.estimate_presets(self.jobs)

    def overrides_note(self) -> str:
        """The command line's settings, which every preset started here (and its estimate) takes."""
        return f"From the command line, for every preset here: {fmt.printable(options_text(self.overrides))}"

    def presets_title(self) -> str:
        """The presets' heading, with the runs trained at once: as chosen, and for the highlighted preset."""
        chosen = "auto" if self.jobs in (None, "auto") else str(self.jobs)
        planned = self.planned_jobs.get(self.highlighted_preset() or "")
        shown = f"{chosen} ({planned})" if planned is not None and str(planned) != chosen else chosen
        return f"Presets — Enter trains the highlighted one; Jobs: {shown}, j changes"

    def highlighted_preset(self) -> str | None:
        if not self.is_mounted:
            return None
        table = self.query_one("#presets", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate)[0].value)

    def runs_title(self, count: int | None = None) -> str:
        if self.filter_text and count is not None:
            return f"Saved runs ({len(self.shown_runs())} of {count} match) — Esc clears the filter"
        shown = f" ({count})" if count is not None else ""
        return f"Saved runs{shown} — Space selects, c compares; Enter opens (watches a live run)"

    def shown_runs(self) -> list[RunFile]:
        """The saved runs the filter lets through, newest first."""
        return [f for f in self.run_files if run_matches(f, self.filter_text)]

    def refresh_runs_if_changed(self) -> None:
        if self.is_current and runs_signature(self.runs_dir) != self.signature:
            self.load_runs()

    def on_screen_resume(self) -> None:
        self.load_runs()  # also re-estimates when a run completed meanwhile
        if self.estimate_now and len(self.estimated) < len(self.presets):
            self.estimate_presets(self.jobs)

    def on_screen_suspend(self) -> None:
        # calibration takes CPU: never compete with the training just started
        self.workers.cancel_group(self, "estimates")
        self.estimate_now = True

    # Workers: only post messages.

    @work(thread=True, exclusive=True, group="estimates")
    def estimate_presets(self, jobs: int | Literal["auto"] | None) -> None:
        """Each preset's estimated time, trained `jobs` runs at once (None: as the preset says)."""
        from tuitrain.session import (  # torch: only when estimating
            check_gpus,
            device_label,
            planned_estimate,
        )

        worker = get_current_worker()
        try:
            device = device_label(self.overrides.get("device", "auto"))
            gpus = check_gpus(self.gpus)
        except TuitrainError as exc:
            self.post_message(DeviceKnown(f"unavailable ({exc})"))
            return
        self.post_message(DeviceKnown(device))
        for name, preset in list(self.presets.items()):
            if worker.is_cancelled:
                return
            if name in self.estimated:
                continue
            try:
                specs = [r.spec for r in preset.expand(self.overrides)]
                planned, seconds = planned_estimate(specs, preset.jobs if jobs is None else jobs, gpus, setup=False)
                self.post_message(EstimateReady(name, seconds, jobs=planned))
            except Exception as exc:  # noqa: BLE001 - an estimate is a convenience, never fatal
                self.post_message(EstimateReady(name, None, error=str(exc)))

    @work(thread=True, exclusive=True, group="start")
    def estimate_start(self, name: str) -> None:
        """The estimate of the preset to start (not one of the list's, when it is a file)."""
        from tuitrain.presets import find_preset
        from tuitrain.session import check_gpus, device_label, planned_estimate, start_estimate

        try:
            preset = self.presets.get(name) or find_preset(name)
            device = device_label(self.overrides.get("device", "auto"))
            specs = [r.spec for r in preset.expand(self.overrides)]
            requested = preset.jobs if self.jobs is None else self.jobs
            seconds = planned_estimate(specs, requested, check_gpus(self.gpus), setup=False)[1]
            if seconds is None and device.startswith("CPU"):
                # not timed (the cores are busy): hours of training are still not started without asking
                seconds = start_estimate(specs)
        except Exception:  # noqa: BLE001 - starting it says what is wrong (in the app's dialog)
            device, seconds = "", None
        self.post_message(StartEstimated(name, device, seconds))

    def estimate_again(self) -> None:
        """Estimate every preset afresh (completed runs have updated the measured speeds)."""
        self.estimated.clear()
        table = self.query_one("#presets", DataTable)
        for name in self.presets:
            self.preset_rows[name][2:4] = pending_cells()
            table.update_cell(name, "jobs", self.preset_rows[name][2])
            table.update_cell(name, "time", self.preset_rows[name][3])
        self.estimate_presets(self.jobs)

    def load_runs(self) -> None:
        self.signature = runs_signature(self.runs_dir)  # before the scan: a change during it is seen next time
        self.read_runs_folder()

    @work(thread=True, exclusive=True, group="runs")
    def read_runs_folder(self) -> None:
        self.post_message(RunsLoaded(scan_runs(self.runs_dir, series=False)))  # the list needs no per-step data

    @on(DeviceKnown)
    def show_device(self, message: DeviceKnown) -> None:
        self.device = message.device
        self.query_one("#device", Static).update(f"Device: {message.device} — estimated times are measured on it")

    @on(EstimateReady)
    def show_estimate(self, message: EstimateReady) -> None:
        if message.seconds is not None or message.error is not None:
            self.estimated.add(message.name)  # else not timed yet (other runs held the cores): tried again on return
        if message.seconds is not None:
            self.seconds[message.name] = message.seconds
        if message.jobs is not None:
            self.planned_jobs[message.name] = message.jobs
        text = fmt.duration(message.seconds) if message.seconds is not None else "?"
        cells = [
            Text(str(message.jobs) if message.jobs is not None else "?", justify="right"),
            Text(text, justify="right"),
        ]
        self.preset_rows[message.name][2:4] = cells
        table = self.query_one("#presets", DataTable)
        table.update_cell(message.name, "jobs", cells[0])
        table.update_cell(message.name, "time", cells[1])
        self.query_one("#presets-title", Static).update(self.presets_title())

    @on(RunsLoaded)
    def show_runs(self, message: RunsLoaded) -> None:
        self.run_files = message.runs
        known = {f.path for f in message.runs}
        self.selected_runs = [p for p in self.selected_runs if p in known]
        self.fill_runs_table()
        self.query_one("#runs-title", Static).update(self.runs_title(len(message.runs)))
        self.show_details()
        completed = {f.path for f in message.runs if f.status == "completed"}
        if self.completed_runs is not None and completed - self.completed_runs and self.estimate_now:
            self.estimate_again()
        self.completed_runs = completed

    def run_cells(self, f: RunFile) -> list:
        """One saved run's cells: an unreadable file shows its name and 'unreadable' (the reason is in the
        details line), so no reason can push the other columns off the screen."""
        r = f.record
        status = f.status
        return [
            SELECTED_MARK if f.path in self.selected_runs else "",
            r.started_at.astimezone().strftime(DATE_FORMAT) if r else "–",
            Text(fmt.printable(r.preset or "–")) if r else "–",
            Text(LIVE, style="bold cyan") if status == "running" else Text(status, style=STATUS_STYLE.get(status, "")),
            Text(fmt.accuracy(r.best_accuracy) if r else "–", justify="right"),
            Text(fmt.printable(r.label if r else f.path.name)),
        ]

    def fill_runs_table(self) -> None:
        headers = [
            (SELECTED_MARK, "sel"),
            ("Date", "date"),
            ("Preset", "preset"),
            ("Status", "status"),
            ("Best acc", "best"),
            ("Label", "label"),
        ]
        rows = {str(f.path): self.run_cells(f) for f in self.shown_runs()}
        fill_fitted(self.query_one("#runs", DataTable), headers, rows, least={"sel": 1})

    def fill_presets_table(self) -> None:
        headers = [("Preset", "name"), ("Runs", "runs"), ("Jobs", "jobs"), ("Est. time", "time"), ("Title", "title")]
        # room in the time column for estimates still to come ("…" now)
        fill_fitted(self.query_one("#presets", DataTable), headers, self.preset_rows, least={"time": 7})

    def on_resize(self, event: Resize) -> None:
        self.call_after_refresh(self.fill_presets_table)  # the titles' room follows the width
        if self.run_files:
            self.call_after_refresh(self.fill_runs_table)

    def highlighted_run(self) -> RunFile | None:
        table = self.query_one("#runs", DataTable)
        if not self.run_files or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return next((f for f in self.run_files if str(f.path) == str(row_key.value)), None)

    @on(DataTable.RowHighlighted)
    @on(DescendantFocus)
    def show_details(self) -> None:
        """Under the runs: the whole of what a row can only hint at (a file's path, why it is unreadable, why a
        preset is invalid), for the highlighted row of the focused table."""
        details = Text()
        presets = self.query_one("#presets", DataTable)
        self.query_one("#presets-title", Static).update(self.presets_title())
        if self.focused is presets and presets.row_count:
            name = str(presets.coordinate_to_cell_key(presets.cursor_coordinate)[0].value)
            if name in self.preset_errors:
                details.append(self.preset_errors[name], style="red")
            elif name in self.presets:
                details.append(" ".join((self.presets[name].description or self.presets[name].title).split()))
        else:
            run = self.highlighted_run()
            if run is not None:
                details.append(fmt.printable(run.path))
                if run.error:
                    details.append(f"\nunreadable: {without_path(run.error, run.path)}", style="red")
        self.query_one("#details", Static).update(details)

    @on(DataTable.RowSelected, "#presets")
    def start_highlighted(self, event: DataTable.RowSelected) -> None:
        name = str(event.row_key.value)
        seconds = self.seconds.get(name)
        if seconds is None and self.device.startswith("CPU"):
            self.start = name  # not timed yet: estimated for the start (start_estimated), then started or asked
            self.estimate_start(name)
            return
        self.start_preset(name, self.presets.get(name), self.device, seconds)

    @on(StartEstimated)
    def start_estimated(self, message: StartEstimated) -> None:
        if self.start != message.name:
            return
        self.start = None
        try:
            from tuitrain.presets import find_preset

            preset = self.presets.get(message.name) or find_preset(message.name)
        except TuitrainError:
            preset = None  # the app's start says why
        self.start_preset(message.name, preset, message.device, message.seconds)

    def start_preset(self, name: str, preset: Preset | None, device: str, seconds: float | None) -> None:
        """Train the preset, after asking when it is estimated at hours on a CPU."""
        if device.startswith("CPU") and seconds is not None and seconds >= LONG_CPU_RUN_S:
            self.offer_quick_variant(name, preset, device, seconds)
            return
        self.post_message(StartPreset(name, self.preset_paths.get(name), jobs=self.jobs))

    def offer_quick_variant(self, name: str, preset: Preset | None, device: str, seconds: float) -> None:
        """Hours on this CPU: ask first, offering the same runs on a subset for fewer epochs."""
        quick = {**QUICK_VARIANT, **{k: v for k, v in self.overrides.items() if k in QUICK_VARIANT}}

        def images(overrides: dict) -> int:  # training images over all runs and epochs: what the time scales with
            return sum(r.spec.train_size() * r.spec.epochs for r in preset.expand(overrides)) if preset else 1

        share = images({**self.overrides, **quick}) / max(images(self.overrides), 1)
        options = options_text(quick)
        question = (
            f"{name} is estimated at {fmt.duration(seconds)} on this CPU ({device}).\n"
            f"Quick variant ({options}): about {fmt.duration(seconds * share)}."
        )

        def answered(answer: str | None) -> None:
            if answer is not None:
                extra = quick if answer == "quick" else None
                self.post_message(StartPreset(name, self.preset_paths.get(name), extra, jobs=self.jobs))

        self.app.push_screen(LongRunScreen(question), answered)

    @on(DataTable.RowSelected, "#runs")
    def open_run(self, event: DataTable.RowSelected) -> None:
        """Enter: watch a live run; open any other in the compare screen, on its own."""
        run = next((f for f in self.run_files if str(f.path) == str(event.row_key.value)), None)
        if run is None:
            return
        if run.status == "running":
            self.post_message(WatchRuns(watch_target(run, self.runs_dir)))
        else:
            self.open_comparison([run.path])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_run", "trash_runs", "label_run", "tag_runs", "note_runs"):
            return self.focused is self.query_one("#runs", DataTable) and bool(self.run_files)
        if action == "close_filter":
            return self.query_one("#runs-filter", Input).display
        return True

    # Filtering and housekeeping of the saved runs.

    def action_filter_runs(self) -> None:
        runs_filter = self.query_one("#runs-filter", Input)
        runs_filter.display = True
        runs_filter.focus()

    @on(Input.Changed, "#runs-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.fill_runs_table()
        self.query_one("#runs-title", Static).update(self.runs_title(len(self.run_files)))
        self.show_details()

    @on(Input.Submitted, "#runs-filter")
    def filter_submitted(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def action_close_filter(self) -> None:
        runs_filter = self.query_one("#runs-filter", Input)
        runs_filter.value = ""  # posts Changed: the whole list comes back
        runs_filter.display = False
        self.query_one("#runs", DataTable).focus()

    def chosen_runs(self) -> list[RunFile]:
        """What d, t and n act on: the selected runs, else the highlighted one."""
        if self.selected_runs:
            return [f for f in self.run_files if f.path in self.selected_runs]
        run = self.highlighted_run()
        return [run] if run is not None else []

    def refuse_live(self, runs: list[RunFile]) -> bool:
        """Say so and return True when one of `runs` is live (its process rewrites its file)."""
        for run in runs:
            reason = live_reason(run)
            if reason is not None:
                label = run.record.label if run.record else run.path.name
                self.app.push_screen(ErrorScreen(f"{fmt.printable(label)} is live: {reason}. Stop it first."))
                return True
        return False

    def action_trash_runs(self) -> None:
        runs = self.chosen_runs()
        if not runs or self.refuse_live(runs):
            return
        names = ", ".join(fmt.printable(f.record.label if f.record else f.path.name) for f in runs[:5])
        more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
        question = (
            f"Move {len(runs)} run(s) to the trash ({fmt.printable(trash_folder(self.runs_dir))})?\n{names}{more}\n"
            "With their checkpoints and series logs; u brings them back (or tuitrain restore)."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.trash(runs)

        self.app.push_screen(ConfirmScreen(question), answered)

    def trash(self, runs: list[RunFile]) -> None:
        try:
            trashed = trash_runs([f.path for f in runs], self.runs_dir)
        except TuitrainError as exc:
            self.app.push_screen(ErrorScreen(str(exc)))
            return
        self.last_trashed = [t.trashed for t in trashed]
        gone = {f.path for f in runs}
        self.selected_runs = [p for p in self.selected_runs if p not in gone]
        self.notify(f"Moved {len(trashed)} run(s) to the trash; u brings them back.")
        self.load_runs()

    def action_restore_trashed(self) -> None:
        if not self.last_trashed:
            self.notify("Nothing trashed here to bring back (tuitrain restore lists the trash).", severity="warning")
            return
        try:
            restored = restore_runs(self.last_trashed, self.runs_dir)
        except TuitrainError as exc:
            self.app.push_screen(ErrorScreen(str(exc)))
            return
        self.last_trashed = []
        self.notify(f"Restored {len(restored)} run(s).")
        self.load_runs()

    def edit(self, runs: list[RunFile], change: Callable[[RunRecord], None]) -> None:
        try:
            edit_runs([f.path for f in runs], change)
        except TuitrainError as exc:
            self.app.push_screen(ErrorScreen(str(exc)))
            return
        self.load_runs()

    def action_label_run(self) -> None:
        run = self.highlighted_run()
        if run is None or run.record is None or self.refuse_live([run]):
            return

        def answered(text: str | None) -> None:
            if text is not None and run.record is not None and text.strip() != run.record.label:
                try:
                    label = check_label(text)
                except TuitrainError as exc:
                    self.app.push_screen(ErrorScreen(str(exc)))
                    return
                self.edit([run], lambda record: relabel(record, label))

        question = f"New label for {fmt.printable(run.record.label)} (its settings stay as they are)"
        self.app.push_screen(TextInputScreen(question, run.record.label), answered)

    def action_tag_runs(self) -> None:
        runs = self.chosen_runs()
        if not runs or self.refuse_live(runs):
            return
        shown = sorted({t for f in runs if f.record for t in f.record.tags})
        question = f"Tags of {len(runs)} run(s): +TAG adds (a bare word too), -TAG removes" + (
            f"\nNow: {fmt.printable(' '.join(shown))}" if shown else ""
        )

        def answered(text: str | None) -> None:
            if not text or not text.strip():
                return
            try:
                add, remove = parse_tag_changes([w if w[:1] in "+-" else f"+{w}" for w in text.split()])
            except TuitrainError as exc:
                self.app.push_screen(ErrorScreen(str(exc)))
                return
            self.edit(runs, lambda record: retag(record, add, remove))

        self.app.push_screen(TextInputScreen(question, placeholder="+baseline -old"), answered)

    def action_note_runs(self) -> None:
        runs = self.chosen_runs()
        if not runs or self.refuse_live(runs):
            return
        note = runs[0].record.notes if len(runs) == 1 and runs[0].record else None

        def answered(text: str | None) -> None:
            if text is not None:
                self.edit(runs, lambda record: renote(record, text))

        question = f"Note on {len(runs)} run(s) (empty removes it)"
        self.app.push_screen(TextInputScreen(question, note or ""), answered)

    def action_toggle_run(self) -> None:
        table = self.query_one("#runs", DataTable)
        if not self.run_files or table.row_count == 0:
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        path = Path(str(row_key.value))
        if path in self.selected_runs:
            self.selected_runs.remove(path)
            mark = ""
        else:
            self.selected_runs.append(path)
            mark = SELECTED_MARK
        table.update_cell(row_key, "sel", mark)

    def action_next_jobs(self) -> None:
        """The next choice of runs at once: auto, 1, 2, … up to the cores (or the --jobs given), auto again; the
        Jobs column and the estimates follow."""
        most = max(cores.machine_cores(), self.jobs if isinstance(self.jobs, int) else 1)
        choices: list[int | Literal["auto"] | None] = [self.auto_jobs, *range(1, most + 1)]
        at = choices.index(self.jobs) if self.jobs in choices else 0
        self.jobs = choices[(at + 1) % len(choices)]
        self.planned_jobs.clear()
        self.query_one("#presets-title", Static).update(self.presets_title())
        self.estimate_again()

    def action_reload_runs(self) -> None:
        self.load_runs()

    def action_compare(self) -> None:
        if not self.selected_runs:
            self.notify("Select runs to compare first: Tab to the saved runs, Space on each.", severity="warning")
            return
        self.open_comparison(list(self.selected_runs))

    def open_comparison(self, paths: list[Path]) -> None:
        self.app.push_screen(CompareScreen(paths))
