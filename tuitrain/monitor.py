"""What a front end knows about a preset's runs, built from engine events only.

The app's run screen draws from a SweepMonitor. It does not care where the events come from: the
training worker of this process, or (later) run files written by another process. No textual here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tuitrain.core.devices import cpu_device
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    LogMessage,
    MetricPoints,
    RunFinished,
    RunStarted,
    RunWaiting,
)
from tuitrain.core.spec import RunSpec
from tuitrain.core.text import printable
from tuitrain.curves import ema_alpha, smooth

LOSS = "loss"
"""The run screen's name for the training loss series (BatchLosses)."""
ACCURACY = "test accuracy"
LR = "lr"
EPOCH_FIELDS = ("val_accuracy", "train_accuracy", LR)
"""Per-epoch figures of the engine besides test accuracy, by their record names (records.EpochRecord), offered by the
metric pickers where a run recorded them."""


def epoch_value(epoch: Any, name: str) -> float | None:
    """A per-epoch figure by name from an EpochEnded or EpochRecord: a logged metric of that name, else the field of
    EPOCH_FIELDS."""
    if name in epoch.metrics:
        return epoch.metrics[name]
    return getattr(epoch, name, None) if name in EPOCH_FIELDS else None


"""The run screen's name for the per-epoch test accuracy."""


def throughput(per_s: float, batch_size_known: bool = True) -> str:
    """'1,234 samples/s', or for a run whose batch size is not known its training steps: '12.3 steps/s'."""
    if batch_size_known:
        return f"{per_s:,.0f} samples/s"
    return f"{per_s:,.1f} steps/s" if per_s < 100 else f"{per_s:,.0f} steps/s"


@dataclass
class RunState:
    """One run as seen through its events: losses, finished epochs, latest progress."""

    run_id: str
    label: str
    run_index: int
    run_count: int
    spec: RunSpec
    device: str
    batches_per_epoch: int
    """0: not known (a script run that did not say)."""
    start_epoch: int = 1
    epochs_known: bool = True
    """Whether spec.epochs is planned (RunStarted.epochs_known)."""
    first_step: int | None = None
    """Global step of losses[0] (a resumed run does not start at 0)."""
    losses: list[float] = field(default_factory=list)
    logged_steps: list[int] = field(default_factory=list)
    """Each loss's step where the run said it (BatchLosses.steps: a script that logs every n steps); empty: the
    losses are one per step from first_step."""
    smoothed: list[float] = field(default_factory=list)
    """EMA of losses, kept up to date as they arrive (never recomputed over the whole run)."""
    epochs: list[EpochEnded] = field(default_factory=list)
    epoch: int = 1
    batch: int = 0
    samples_per_s: float = 0.0
    """Training throughput (BatchLosses.samples_per_s): steps per second where batch_size_known is False."""
    has_epochs: bool = True
    """False for a TensorBoard log (RunStarted.has_epochs): shown by step, not by epoch and batch."""
    batch_size_known: bool = True
    """Whether samples_per_s counts samples, not training steps (BatchLosses.batch_size_known)."""
    elapsed_s: float = 0.0
    status: str = "running"
    config: dict[str, Any] | None = None
    """A script run's settings (RunStarted.config)."""
    loss_series: str | None = None
    """The name the run logged its training loss under (RunStarted.loss_series)."""
    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Named per-step series other than the loss, by name: steps and values (MetricPoints)."""
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """losses, smoothed and logged_steps as arrays, as far as converted (_as_array)."""

    def add_points(self, event: MetricPoints) -> None:
        steps, values = self.metrics.get(event.name, (np.empty(0, dtype=np.int64), np.empty(0)))
        self.metrics[event.name] = (
            np.concatenate((steps, np.asarray(event.steps, dtype=np.int64))),
            np.concatenate((values, np.asarray(event.values, dtype=float))),
        )

    def epoch_figures(self) -> list[str]:
        """Names of the per-epoch figures this run has: test accuracy where measured, the engine's other per-epoch
        figures where recorded (EPOCH_FIELDS), then its extra metrics."""
        names: dict[str, None] = {}
        if any(e.test_accuracy is not None for e in self.epochs):
            names[ACCURACY] = None
        names.update({n: None for n in EPOCH_FIELDS if any(getattr(e, n) is not None for e in self.epochs)})
        for e in self.epochs:
            names.update(dict.fromkeys(e.metrics))
        return list(names)

    def epoch_series(self, name: str) -> tuple[list[float], list[float]]:
        """A per-epoch figure's points: (epochs, values); a metric a script logged under one of EPOCH_FIELDS' names
        comes before the engine's field of that name (which a script run leaves empty)."""
        if name == ACCURACY:
            points = [(float(e.epoch), e.test_accuracy) for e in self.epochs if e.test_accuracy is not None]
        else:
            points = [(float(e.epoch), v) for e in self.epochs if (v := epoch_value(e, name)) is not None]
        return [x for x, _ in points], [float(y) for _, y in points]

    def step_series(self, name: str, smoothed: bool) -> tuple[np.ndarray, np.ndarray]:
        """A per-step series' points: the training loss (EMA-smoothed or raw) or a named series."""
        if name == LOSS:
            return self.steps(), self._as_array("smoothed" if smoothed else "losses")
        return self.metrics.get(name, (np.empty(0, dtype=np.int64), np.empty(0)))

    def _as_array(self, which: str) -> np.ndarray:
        """losses, smoothed or logged_steps as an array, converting only what came since the last call (a redraw of a
        million-step run must not convert a million floats each time)."""
        values: list[float] = getattr(self, which)
        cached = self._arrays.get(which)
        if cached is None or len(cached) > len(values):
            cached = np.empty(0)
        if len(cached) < len(values):
            cached = np.concatenate((cached, np.asarray(values[len(cached) :], dtype=float)))
            self._arrays[which] = cached
        return cached

    def add_losses(self, event: BatchLosses) -> None:
        if self.first_step is None:
            self.first_step = event.first_step
        last = self.smoothed[-1] if self.smoothed else None
        self.smoothed += smooth(event.losses, ema_alpha(self.batches_per_epoch), last)
        if event.steps is not None and len(self.logged_steps) == len(self.losses):
            self.logged_steps += event.steps
        self.losses += event.losses
        self.epoch, self.batch = event.epoch, event.batch
        self.samples_per_s, self.elapsed_s = event.samples_per_s, event.elapsed_s
        self.batch_size_known = event.batch_size_known
        if event.threads and self.device.startswith("CPU"):  # the run's share of the cores changed
            self.device = cpu_device(event.threads)

    @property
    def speed_text(self) -> str:
        """The run's throughput with its unit: samples/s, or steps/s where its batch size is not known."""
        return throughput(self.samples_per_s, self.batch_size_known)

    @property
    def steps_total(self) -> int:
        return self.batches_per_epoch * self.spec.epochs

    @property
    def steps_done(self) -> int:
        return (self.epoch - 1) * self.batches_per_epoch + self.batch

    @property
    def eta_s(self) -> float | None:
        """Remaining time of this run at its rate so far (training only; evaluation is short)."""
        done = self.steps_done - (self.start_epoch - 1) * self.batches_per_epoch
        if self.status != "running" or done <= 0 or self.elapsed_s <= 0 or not self.length_known:
            return None
        return self.elapsed_s / done * max(self.steps_total - self.steps_done, 0)

    @property
    def length_known(self) -> bool:
        return self.epochs_known and self.batches_per_epoch > 0

    @property
    def epoch_text(self) -> str:
        """'3/10', or '3' where the planned epochs are not known or already passed (nothing shown is invented)."""
        known = self.epochs_known and self.epoch <= self.spec.epochs
        return f"{self.epoch}/{self.spec.epochs}" if known else str(self.epoch)

    @property
    def position_text(self) -> str:
        """'Epoch 3/10', or for a TensorBoard log (no epochs) its steps so far: 'Step 1,200'."""
        return f"Epoch {self.epoch_text}" if self.has_epochs else f"Step {self.batch:,}"

    @property
    def batch_text(self) -> str:
        """'120/938', or the batches of this epoch so far where an epoch's length is not known."""
        return f"{self.batch}/{self.batches_per_epoch}" if self.batches_per_epoch else str(self.batch)

    def steps(self) -> np.ndarray:
        """The losses' steps: as logged where the run said them, else one per step from first_step."""
        if self.logged_steps and len(self.logged_steps) == len(self.losses):
            return self._as_array("logged_steps")
        start = self.first_step or 0
        return np.arange(start, start + len(self.losses))


@dataclass
class SweepMonitor:
    """All runs of one preset invocation, in run order, fed one event at a time.

    Several runs may train at once (their events interleave); one of them is highlighted (`current`): the one
    the run screen details and its pause and stop keys act on.
    """

    runs: dict[str, RunState] = field(default_factory=dict)
    current: RunState | None = None
    """The highlighted run: the newest started until it ends, then another live run; with none left, the
    last one highlighted (its progress stays shown, as when runs train one at a time)."""
    waiting: dict[str, RunWaiting] = field(default_factory=dict)
    """Planned runs that cannot start yet (no free core or worker), by run id."""
    last_log: str = ""

    def apply(self, event: Event) -> RunState | None:
        """Take in an event; returns the run it concerns (None for log lines, waiting and unknown runs)."""
        # labels and log lines are shown as printable() makes them, as the headless lines print them
        if isinstance(event, LogMessage):
            self.last_log = printable(event.text)
            return None
        if isinstance(event, RunWaiting):
            self.waiting[event.run_id] = replace(event, label=printable(event.label))
            return None
        if isinstance(event, RunStarted):
            self.waiting.pop(event.run_id, None)
            state = RunState(
                run_id=event.run_id,
                label=printable(event.label),
                run_index=event.run_index,
                run_count=event.run_count,
                spec=event.spec,
                device=event.device,
                batches_per_epoch=event.batches_per_epoch,
                start_epoch=event.start_epoch,
                epoch=event.start_epoch,
                config=event.config,
                epochs_known=event.epochs_known,
                has_epochs=event.has_epochs,
                loss_series=event.loss_series,
            )
            self.runs[event.run_id] = state
            current = self.current
            if current is None or current.status != "running" or current.run_id == event.run_id:
                self.current = state
            return state
        if isinstance(event, RunFinished):
            self.waiting.pop(event.run_id, None)  # stopped before it started
        if event.run_id not in self.runs:
            return None
        state = self.runs[event.run_id]
        if isinstance(event, BatchLosses):
            state.add_losses(event)
        elif isinstance(event, MetricPoints):
            state.add_points(event)
        elif isinstance(event, EpochEnded):
            state.epochs.append(event)
            state.epoch = event.epoch
            state.batch = state.batches_per_epoch or state.batch  # not known: the points this epoch logged
        elif isinstance(event, RunFinished):
            state.status = event.status
            if state is self.current and self.live:
                self.highlight_next()
        return state

    @property
    def live(self) -> list[RunState]:
        """The runs training now, in run order."""
        return sorted((r for r in self.runs.values() if r.status == "running"), key=lambda r: r.run_index)

    @property
    def queued(self) -> list[RunWaiting]:
        """The waiting runs, in run order."""
        return sorted(self.waiting.values(), key=lambda w: w.run_index)

    def highlight_next(self, step: int = 1) -> RunState | None:
        """Move the highlight `step` live runs on (back when negative), round the live runs in run order; from a
        run that has ended, to the live run that follows it."""
        live = self.live
        if not live:
            return self.current
        ids = [r.run_id for r in live]
        if self.current is not None and self.current.run_id in ids:
            self.current = live[(ids.index(self.current.run_id) + step) % len(live)]
        else:
            index = self.current.run_index if self.current is not None else -1
            after = [r for r in live if r.run_index > index]
            self.current = (after or live)[0]
        return self.current

    def step_metrics(self) -> list[str]:
        """The per-step series of the runs: the loss, then the named ones in first-seen order."""
        names: dict[str, None] = {LOSS: None}
        for run in self.runs.values():
            names.update(dict.fromkeys(run.metrics))
        return list(names)

    def step_metric_label(self, name: str) -> str:
        """How a picker lists a per-step series: the training loss with the names the runs logged it under where
        they differ ('loss (train/loss)'), so that a user finds the series the script logged; others as named."""
        if name != LOSS:
            return name
        logged = dict.fromkeys(r.loss_series for r in self.runs.values() if r.loss_series not in (None, LOSS))
        return f"{LOSS} ({', '.join(n for n in logged if n)})" if logged else LOSS

    def epoch_metrics(self) -> list[str]:
        names: dict[str, None] = {}
        for run in self.runs.values():
            names.update(dict.fromkeys(run.epoch_figures()))
        if names:
            return list(names)
        # a run that may yet measure accuracy gets its (empty) chart; TensorBoard logs, which have no epochs, none
        return [ACCURACY] if not self.runs or any(r.has_epochs for r in self.runs.values()) else []

    @property
    def finished(self) -> list[RunState]:
        return [r for r in self.runs.values() if r.status != "running"]


def downsample(x: Any, y: Any, points: int) -> tuple[list[float], list[float]]:
    """At most about `points` points to draw, per pixel column: the x range cut into points // 2 columns of equal
    width, each drawn by its lowest and its highest value (in the order they came), so that a single spike
    survives, unlike a mean or a random sample. The first and the last point are always drawn; NaN is left out.
    The full series stays in the record."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    keep = ~np.isnan(ys)
    if not keep.all():
        xs, ys = xs[keep], ys[keep]
    n = len(ys)
    columns = max(points // 2, 1)
    if n <= max(points, 2):
        return xs.tolist(), ys.tolist()
    span = xs[-1] - xs[0]
    if span <= 0:
        column = np.zeros(n, dtype=np.int64)
    else:
        column = np.minimum(((xs - xs[0]) * (columns / span)).astype(np.int64), columns - 1)
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])  # x only grows: a column is one run
    ends = np.r_[starts[1:], n]
    # per column the index of its lowest and of its highest value: argmin/argmax within each run of equal column
    order = np.arange(n)
    lows = np.minimum.reduceat(ys, starts)
    highs = np.maximum.reduceat(ys, starts)
    at_low = np.where(ys == np.repeat(lows, ends - starts), order, n)
    at_high = np.where(ys == np.repeat(highs, ends - starts), order, n)
    first_low = np.minimum.reduceat(at_low, starts)
    first_high = np.minimum.reduceat(at_high, starts)
    chosen = np.unique(np.concatenate(([0, n - 1], first_low, first_high)))
    return xs[chosen].tolist(), ys[chosen].tolist()
