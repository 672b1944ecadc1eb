"""The run screen: live charts, progress and the epoch table of a preset's runs, with controls.

Events come from an EventSource run in a thread worker: a preset trained in this process, or a
Follower reading the run files another process writes (`tuitrain watch`). Its sink only posts
EngineEvent messages (one per engine event, which the engine already chunks). Handlers update the SweepMonitor and the
cheap widgets; the charts are only marked dirty and redrawn by a timer a few times a second.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from tuitrain import format as fmt
from tuitrain.core.control import RunControl
from tuitrain.core.errors import TuitrainError
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    EventSource,
    LogMessage,
    MetricPoints,
    RunFinished,
    RunStarted,
    RunWaiting,
)
from tuitrain.monitor import ACCURACY, LOSS, SweepMonitor
from tuitrain.remote_control import Action
from tuitrain.tui.messages import EngineEvent, SourceFailed
from tuitrain.tui.screens.dialogs import ConfirmScreen, ErrorScreen, MetricPicker
from tuitrain.tui.widgets.charts import AccuracyChart, LossChart, run_style
from tuitrain.tui.widgets.confusion import ConfusionPanel, latest_matrix
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.gpu_panel import GpuPanel
from tuitrain.tui.widgets.progress import ProgressPanel
from tuitrain.tui.widgets.too_small import SizedScreen, TooSmall

REDRAW_EVERY_S = 0.5
# The loss chart changes at every read-back, and a plotext render costs tens of ms (more in a big
# terminal) of the cores the training threads use: redraw it once a second at most, and no more often
# than keeps its renders under about 2% of the time.
LOSS_REDRAW_EVERY_S = 1.0
LOSS_RENDER_SHARE = 0.02
LOSS_REDRAW_MAX_S = 4.0
"""Charts and progress redraw at most this often (plotext builds the whole figure in Python, holding
the GIL that the training thread needs)."""

STEP_RANGES = (1.0, 0.5, 0.1, 0.01)
"""The step ranges z cycles through: all steps, then the latest half, tenth, hundredth."""

CONTROL_ACTIONS = {"pause", "stop_run", "stop_all"}
HIGHLIGHT_ACTIONS = {"next_run", "previous_run"}
WATCHING_NOTE = "Watching another process's training: pause and stop work only there."
CONTROLLING_NOTE = "Watching another process's training: p, n and x ask it to pause or stop."


class RunScreen(SizedScreen[None]):
    CSS_PATH = "run.tcss"
    BINDINGS = [
        Binding("tab", "next_run", "Next run"),
        Binding("shift+tab", "previous_run", "Previous run", show=False),
        Binding("p", "pause", "Pause"),
        Binding("n", "stop_run", "Stop run"),
        Binding("x", "stop_all", "Stop all"),
        Binding("s", "toggle_smooth", "EMA/raw"),
        Binding("l", "toggle_log", "Log"),
        Binding("f", "show_files", "Files"),
        # not in the footer (it fits 80 columns as it is): the help lists them
        Binding("m", "pick_metric", "Metric", show=False),
        Binding("z", "zoom_steps", "Step range", show=False),
        Binding("c", "toggle_confusion", "Confusion matrix", show=False),
        Binding("escape", "back", "Back"),
    ]
    NARROW_FOOTER_SPARES = frozenset({"toggle_smooth", "toggle_log"})

    def __init__(self, source: EventSource) -> None:
        super().__init__()
        self.source = source
        self.monitor = SweepMonitor()
        self.smooth = True
        self.log_scale = False
        self.step_metric = LOSS
        """The per-step series the left chart draws."""
        self.epoch_metric: str | None = None
        """The per-epoch figure the right chart draws; None: test accuracy, or the runs' first figure without one."""
        self.last_steps = 1.0
        """The fraction of the steps drawn, the latest ones (z cycles STEP_RANGES)."""
        self.loss_dirty = False
        self.loss_drawn_at = 0.0
        self.accuracy_dirty = False
        self.progress_dirty = False
        self.done = False
        self.quitting = False
        self.note = WATCHING_NOTE if source.control is None else ""
        self.files: str | None = None
        """Where the run files are, shown once training ends."""
        self.feed_worker: Worker | None = None
        self.confusion_shown = False
        """The confusion matrix is shown in the charts' place (c toggles it)."""
        self.last_matrix_run: str | None = None
        """The run whose epoch brought the latest confusion matrix: shown while the highlighted run has none yet."""
        self.remote_shown: tuple[bool, frozenset[str]] = (False, frozenset())
        """Whether the watched runs' trainer took requests, and the runs it said were paused, when last shown."""

    @property
    def remote_live(self) -> bool:
        """Watching runs whose trainer takes requests: p, n and x go to it."""
        return self.source.remote is not None and self.source.remote.live

    @property
    def watching(self) -> bool:
        """The events come from another process's run files: nothing here can pause or stop it."""
        return self.source.control is None

    @property
    def training(self) -> bool:
        """Events are still coming from training in this process (quitting would stop it)."""
        return not self.done and not self.watching

    @property
    def paused(self) -> set[str]:
        """The ids of the live runs that are paused (each has its own control when runs train at once); when
        watching, those that the trainer says are paused."""
        if self.source.remote is not None:
            trainer_paused = self.source.remote.paused
            return {run.run_id for run in self.monitor.live if run.run_id in trainer_paused}
        return {
            run.run_id
            for run in self.monitor.live
            if (control := self.source.control_for(run.run_id)) is not None and control.paused.is_set()
        }

    def compose(self) -> ComposeResult:
        yield Static(Text(fmt.printable(self.source.title)), id="run-title", classes="screen-title")
        yield ProgressPanel(id="progress")
        yield GpuPanel(id="gpu")
        yield Static(id="legend")
        with Horizontal(id="charts"):
            yield LossChart(id="loss-chart")
            yield AccuracyChart(id="accuracy-chart")
        yield ConfusionPanel(id="confusion")
        yield EpochTable(id="epochs")
        yield Footer()
        yield TooSmall()

    def on_mount(self) -> None:
        self.set_interval(REDRAW_EVERY_S, self.redraw_charts)
        self.show_progress()
        self.feed_worker = self.feed()

    @work(thread=True, exclusive=True, group="source", exit_on_error=False)
    def feed(self) -> None:
        try:
            self.source.run(self.post_event)
        except TuitrainError as exc:
            self.post_message(SourceFailed(str(exc)))

    def on_unmount(self) -> None:
        # the source's thread ends within a poll (a follower) or a batch (training, saved as interrupted), so the
        # app can exit: Textual marks the feed worker cancelled as the app closes, but its thread runs on until
        # the source returns (quitting while training has stopped it already; stopping twice does nothing more)
        self.source.stop()

    def post_event(self, event: Event) -> None:
        """The sink: called on the worker thread; posting a message is thread-safe and does not wait."""
        self.post_message(EngineEvent(event))

    @on(EngineEvent)
    def take_event(self, message: EngineEvent) -> None:
        event = message.event
        run = self.monitor.apply(event)
        if isinstance(event, BatchLosses):
            self.loss_dirty = self.progress_dirty = True
            return  # the timer shows it
        if isinstance(event, MetricPoints):
            self.loss_dirty = self.step_metric != LOSS or self.loss_dirty
            # runs without epochs draw a named series in the per-epoch chart's place
            self.accuracy_dirty = self.accuracy_dirty or self.shown_epoch_metric() is None
            return
        if isinstance(event, RunWaiting):
            self.refresh_bindings()
        elif isinstance(event, EpochEnded) and run is not None:
            self.query_one(EpochTable).add_epoch(run, event)
            self.accuracy_dirty = True
            if event.confusion is not None:
                self.last_matrix_run = run.run_id
            self.show_confusion()
        elif isinstance(event, (RunStarted, RunFinished)):
            self.loss_dirty = self.accuracy_dirty = True
            self.show_legend()
            self.refresh_bindings()  # the keys that move the highlight show while several runs train
            if isinstance(event, RunFinished):
                self.query_one(GpuPanel).run_ended(event.run_id)
            if isinstance(event, RunStarted):
                self.query_one(GpuPanel).run_started(event)
                # a watched run that started over (resumed) is replayed from its start
                self.query_one(EpochTable).remove_run(event.run_id)
                self.query_one("#run-title", Static).update(Text(fmt.printable(self.source.title)))
                self.show_confusion()  # the highlighted run may have changed
            if isinstance(event, RunFinished) and event.status != "completed":
                detail = f": {event.error}" if event.error else ""
                self.notify(
                    fmt.printable(f"{event.label}: {event.status}{detail}"),
                    severity="warning" if event.status == "interrupted" else "error",
                    markup=False,  # a label is text, never markup
                )
        if isinstance(event, LogMessage) and self.watching and self.monitor.current is not None:
            self.notify(fmt.printable(event.text), severity="warning", markup=False)  # e.g. an unreadable run file
        self.show_progress()

    @on(SourceFailed)
    def source_failed(self, message: SourceFailed) -> None:
        self.note = f"Error: {message.error}"
        self.show_progress()
        self.app.push_screen(ErrorScreen(message.error, title="Cannot train"), self.leave)

    def leave(self, _result: object = None) -> None:
        """Back to the home screen (not awaited: called from a dialog's callback)."""
        self.dismiss(None)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.feed_worker or not event.worker.is_finished:
            return
        self.done = True
        self.monitor.waiting.clear()  # stopped: they will not start
        self.query_one(GpuPanel).stop()
        self.redraw_charts(force=True)
        if self.quitting:
            self.app.exit()
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.note = f"Error: {type(error).__name__}: {error}"
            self.app.push_screen(ErrorScreen(self.note, title="Training stopped"))
        elif not self.note.startswith("Error"):
            statuses = [r.status for r in self.monitor.runs.values()]
            summary = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) or "no run started"
            folder = self.source.result_folder()
            self.note = f"Finished ({summary})."
            self.files = str(folder) if folder else None
        self.show_progress()
        self.refresh_bindings()

    def show_progress(self) -> None:
        self.query_one(ProgressPanel).show(self.monitor, paused=self.paused, note=self.note, files=self.files)

    def show_confusion(self) -> None:
        """The confusion matrix, when shown: the highlighted run's latest, else the latest any run brought."""
        if not self.confusion_shown:
            return
        run = self.monitor.current
        if (run is None or latest_matrix(run) is None) and self.last_matrix_run in self.monitor.runs:
            run = self.monitor.runs[self.last_matrix_run]
        self.query_one(ConfusionPanel).show(run)

    def show_legend(self) -> None:
        """The charts' legend, outside them: each run's line style and label, in its colour."""
        legend = Text()
        for run in self.monitor.runs.values():
            style = run_style(run.run_id, run.run_index)
            legend.append_text(style.swatch())
            legend.append(f" {run.label}   ", style=style.markup)
        self.query_one("#legend", Static).update(legend)

    def redraw_charts(self, force: bool = False) -> None:
        if self.source.remote is not None:  # what the watched runs' trainer says: shown as it changes
            remote = (self.remote_live, frozenset(self.source.remote.paused))
            if remote != self.remote_shown:
                self.remote_shown = remote
                if self.note in (WATCHING_NOTE, CONTROLLING_NOTE):  # not once it says how the runs ended
                    self.note = CONTROLLING_NOTE if self.remote_live else WATCHING_NOTE
                self.progress_dirty = True
                self.refresh_bindings()
        if self.progress_dirty:
            self.progress_dirty = False
            self.show_progress()
        render_s = self.query_one(LossChart).render_s
        every = min(max(LOSS_REDRAW_EVERY_S, render_s / LOSS_RENDER_SHARE), LOSS_REDRAW_MAX_S)
        if force or (self.loss_dirty and time.monotonic() - self.loss_drawn_at >= every - 0.05):
            self.draw_loss_chart()
        if self.accuracy_dirty or force:
            self.draw_epoch_chart()

    def shown_epoch_metric(self) -> str | None:
        """The per-epoch figure the right-hand chart draws; None for runs that have no epochs (TensorBoard logs)."""
        if self.epoch_metric is not None:
            return self.epoch_metric
        metrics = self.monitor.epoch_metrics()  # test accuracy, or for runs without one their first figure
        return metrics[0] if metrics else None

    def side_step_metric(self) -> str | None:
        """For runs without epochs: the named per-step series the right-hand chart draws instead (the first one
        that the loss chart does not show and that makes a line: Lightning's hp_metric is one placeholder point, its
        'epoch' a counter), or None: the loss chart takes its room."""
        runs = list(self.monitor.runs.values())
        for name in self.monitor.step_metrics():
            if name in (LOSS, self.step_metric) or name.rsplit("/", 1)[-1] == "epoch":
                continue
            if max((len(run.metrics[name][0]) for run in runs if name in run.metrics), default=0) >= 2:
                return name
        return None

    def draw_epoch_chart(self) -> None:
        self.accuracy_dirty = False
        chart = self.query_one(AccuracyChart)
        runs = list(self.monitor.runs.values())
        metric = self.shown_epoch_metric()
        side = self.side_step_metric() if metric is None else None
        self.set_class(metric is None and side is None, "loss-only")
        if metric is not None:
            chart.draw(runs, metric, log_scale=self.log_scale)
        elif side is not None:
            chart.draw_steps(runs, side, log_scale=self.log_scale)

    def draw_loss_chart(self) -> None:
        self.loss_dirty = False
        self.loss_drawn_at = time.monotonic()
        self.query_one(LossChart).draw(
            list(self.monitor.runs.values()),
            smooth=self.smooth,
            log_scale=self.log_scale,
            metric=self.step_metric,
            last=self.last_steps,
        )

    def on_resize(self, event: Resize) -> None:
        self.loss_dirty = True  # re-bucket the points for the new width
        self.progress_dirty = True  # the files' path is cut to the width

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in CONTROL_ACTIONS:
            return (self.source.control is not None or self.remote_live) and not self.done
        if action == "show_files":
            return self.files is not None
        if action in HIGHLIGHT_ACTIONS:
            return len(self.monitor.live) > 1
        if action == "back":
            if self.done or self.watching:
                return True
            # shown greyed out while training; hidden while Tab is shown, so that the footer fits 80 columns
            return False if len(self.monitor.live) > 1 else None
        return True

    # Controls: they only set thread-safe flags that the loop reads at batch boundaries.

    def highlighted_control(self) -> RunControl | None:
        """The controls of the highlighted run while it trains; None (and a word to the user) otherwise."""
        run = self.monitor.current
        control = self.source.control_for(run.run_id) if run is not None and run.status == "running" else None
        if control is None:
            self.notify("No run is training right now.", severity="warning")
        return control

    def highlighted_remote_run(self) -> str | None:
        """When watching: the highlighted run's id while it trains and its trainer takes requests; None (and a word
        to the user) otherwise."""
        run = self.monitor.current
        if run is None or run.status != "running" or not self.remote_live:
            self.notify("No run is training right now.", severity="warning")
            return None
        return run.run_id

    def ask_trainer(self, action: Action, run_ids: list[str] | None, doing: str) -> None:
        """Send a request to the watched runs' trainer: the screen shows the effect once the trainer reports it."""
        assert self.source.remote is not None
        if self.source.remote.request(action, run_ids):
            self.notify(fmt.printable(f"Asked the training process to {doing}."), markup=False)
        else:
            self.notify("The training process is gone: nothing to ask.", severity="warning")

    def action_pause(self) -> None:
        """Pause or resume the highlighted run (with one run at a time: training)."""
        if self.watching:
            if (run_id := self.highlighted_remote_run()) is not None:
                label = self.monitor.runs[run_id].label
                if run_id in self.paused:
                    self.ask_trainer("unpause", [run_id], f"go on with {label}")
                else:
                    self.ask_trainer("pause", [run_id], f"pause {label}")
            return
        control = self.highlighted_control()
        if control is None:
            return
        if control.paused.is_set():
            control.paused.clear()
        else:
            control.paused.set()
        self.show_progress()

    def action_stop_run(self) -> None:
        if self.watching:
            if (run_id := self.highlighted_remote_run()) is not None:
                label = self.monitor.runs[run_id].label
                self.ask_trainer("stop", [run_id], f"stop {label}; it is saved as interrupted")
            return
        control = self.highlighted_control()
        if control is None:
            return
        control.stop_run.set()
        assert self.monitor.current is not None  # a control is only given for a live run
        self.notify(f"Stopping {self.monitor.current.label}; it is saved as interrupted.")

    def action_stop_all(self) -> None:
        if self.watching:  # the trainer stops; this screen follows its runs until they are saved
            self.ask_trainer("stop", None, "stop: the runs in progress are saved as interrupted, no more start")
            return
        self.source.stop()
        saved = "the runs in progress are" if len(self.monitor.live) > 1 else "the current run is"
        self.note = f"Stopping: {saved} saved as interrupted, no more runs start."
        self.show_progress()

    def action_next_run(self) -> None:
        self.monitor.highlight_next(1)
        self.show_progress()
        self.show_confusion()

    def action_previous_run(self) -> None:
        self.monitor.highlight_next(-1)
        self.show_progress()
        self.show_confusion()

    def action_toggle_confusion(self) -> None:
        """The confusion matrix in the charts' place, or the charts again."""
        self.confusion_shown = not self.confusion_shown
        self.set_class(self.confusion_shown, "confusion")
        self.show_confusion()
        if not self.confusion_shown:
            self.loss_dirty = self.accuracy_dirty = True  # drawn at their size again

    def action_show_files(self) -> None:
        """The run files' whole folder, which the progress panel cuts at the start to fit: in a notification, and on
        the clipboard where the terminal takes it (OSC 52)."""
        if self.files is None:
            return
        self.app.copy_to_clipboard(self.files)
        self.notify(
            f"{self.files}\n(also sent to the clipboard, where the terminal allows it)", title="Run files", timeout=20
        )

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self.draw_loss_chart()  # only the loss chart depends on it

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.draw_loss_chart()
        if self.shown_epoch_metric() != ACCURACY:  # accuracy keeps its 0-100 axis
            self.draw_epoch_chart()

    def action_pick_metric(self) -> None:
        shown = ("step", self.step_metric)

        def picked(choice: tuple[str, str] | None) -> None:
            if choice is None:
                return
            kind, name = choice
            if kind == "step":
                self.step_metric = name
                self.draw_loss_chart()
                if self.shown_epoch_metric() is None:  # the other chart shows another series than this one
                    self.draw_epoch_chart()
            else:
                self.epoch_metric = name
                self.draw_epoch_chart()

        step_metrics = self.monitor.step_metrics()
        labels = {name: self.monitor.step_metric_label(name) for name in step_metrics}
        self.app.push_screen(MetricPicker(step_metrics, self.monitor.epoch_metrics(), shown, labels), picked)

    def action_zoom_steps(self) -> None:
        self.last_steps = STEP_RANGES[(STEP_RANGES.index(self.last_steps) + 1) % len(STEP_RANGES)]
        self.draw_loss_chart()

    def action_back(self) -> None:
        if self.done or self.watching:
            self.dismiss(None)

    def stop_and_quit(self, reason: str = "Quitting") -> None:
        """Stop training and quit once the run file is saved as interrupted (no question asked)."""
        if self.done:
            self.app.exit()
            return
        self.quitting = True
        self.source.stop()
        self.note = f"{reason}: saving the run file…"
        self.show_progress()

    def request_quit(self) -> None:
        """Quit; while training, ask first, then stop and wait for the run file to be saved."""
        if self.done:
            self.app.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_and_quit()

        self.app.push_screen(
            ConfirmScreen("Training is in progress. Stop it and quit?\nThe current run is saved as interrupted."),
            answered,
        )
