"""Following runs that another process trains: run files in, engine events out.

A training process rewrites its run file atomically every few seconds (tuitrain.records). A
Follower polls that file, or an invocation folder, and turns each new version of a record into the
events the training loop itself emits (RunStarted, BatchLosses, EpochEnded, RunFinished, LogMessage),
by diffing it against what it has already emitted. A front end cannot tell the two sources apart:
the app's run screen and the headless printer take either.

No textual here. Reading never raises: a file that is missing, being replaced or not (yet) valid is
skipped until the next poll, and the last good version stays shown.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from tuitrain.catalog import (
    PLAN_FILE,
    STALE_AFTER_S,
    TRASH_DIR,
    effective_status,
    pid_alive,
    training_process_alive,
)
from tuitrain.core.control import RunControl
from tuitrain.core.devices import cpu_device
from tuitrain.core.errors import RecordError, TuitrainError
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    LogMessage,
    MetricPoints,
    RunStarted,
    Sink,
)
from tuitrain.core.folder_lock import folder_writer_alive
from tuitrain.core.serieslog import SeriesReader
from tuitrain.core.tfevents import is_event_file
from tuitrain.records import RunRecord, parse_record, run_finished
from tuitrain.remote_control import RemoteControls
from tuitrain.tblogs import PRESET as TENSORBOARD
from tuitrain.tblogs import TensorBoardRunReader, log_folders

POLL_S = 0.5
"""Seconds between two looks at the files (a stat each; a file is parsed only when it changed)."""
REPORT_AFTER_FAILURES = 3
"""Consecutive failed reads of a file before the reason is shown (one failure is usually a race)."""
INVOCATION_NAME = re.compile(r"^\d{8}-\d{6}-.+-[0-9a-f]{6}$")
"""Folder names made by session.new_invocation_dir: timestamp, preset, random suffix."""
DETACHED_LOG = "tuitrain.log"
"""The output of a `--detach`ed training process, in its invocation folder."""
DETACHED_PID = "tuitrain.pid"
"""`{"pid": N, "host": NAME}` of a `--detach`ed training process, so a watcher can tell it died before its first
run file."""


def run_files(folder: Path) -> list[Path]:
    """Run files directly in an invocation folder, in run order (NN-label.json), temp files skipped."""
    try:
        return sorted(p for p in Path(folder).glob("*.json") if not p.name.startswith(".") and p.is_file())
    except OSError:
        return []


def is_invocation_folder(folder: Path) -> bool:
    return bool(INVOCATION_NAME.match(folder.name)) or bool(run_files(folder)) or (folder / PLAN_FILE).is_file()


def invocation_started(folder: Path) -> float | None:
    """When an invocation started: from its folder name (cheap), else its first run, else the folder's time."""
    if INVOCATION_NAME.match(folder.name):
        try:
            return datetime.strptime(folder.name[:15], "%Y%m%d-%H%M%S").timestamp()  # local time, as named
        except ValueError:
            pass
    started = []
    for path in run_files(folder):
        try:
            started.append(parse_record(path.read_text(encoding="utf-8"), str(path)).started_at.timestamp())
        except (OSError, UnicodeDecodeError, RecordError):
            continue
    try:
        return min(started) if started else folder.stat().st_mtime
    except OSError:
        return None


def newest_invocation(runs_dir: Path) -> Path | None:
    """The invocation folder directly under runs_dir that started last."""
    try:
        folders = [
            d for d in Path(runs_dir).iterdir() if d.is_dir() and d.name != TRASH_DIR and is_invocation_folder(d)
        ]
    except OSError:
        return None
    started = [(when, folder) for folder in folders if (when := invocation_started(folder)) is not None]
    return max(started)[1] if started else None


class RecordReader(Protocol):
    """What a RunTracker reads versions of a run from: a run file (RunFileReader) or a TensorBoard log folder
    (tblogs.TensorBoardRunReader)."""

    failures: int
    error: str | None
    rewinds: int
    """Reads that met a rewind of the run's series (serieslog): what was emitted of them is replayed."""

    def read(self) -> RunRecord | None: ...


class RunFileReader:
    """Reads one run file when it has changed (inode, mtime or size), and its series log's appended bytes, never
    raising.

    The file is opened once and its stat taken from the open descriptor, so the text and the stat
    belong to the same version even while the writer replaces the file. The series log (version 4 files) is
    tailed by byte offset: a look reads only what was appended since the last; a frame that rewinds a series (a run
    resumed from an earlier epoch end, or trained again from the start) drops that series' later points.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._version: tuple[int, int, int] | None = None
        self.failures = 0
        """Consecutive reads that failed; reset by a good read."""
        self.error: str | None = None
        self.record: RunRecord | None = None
        """The last good version of the record."""
        self.series: SeriesReader | None = None
        self.rewinds = 0

    def read(self) -> RunRecord | None:
        """The record if the file or its series log changed since the last good read and is valid now, else None."""
        record = self._read_record()
        if record is not None:
            self.record = record
        elif self.record is None:
            return None
        current = self.record
        if current.series_file is None:
            return record
        if self.series is None or self.series.path.name != current.series_file:
            self.series = SeriesReader(self.path.parent / current.series_file)
        rewinds = self.series.rewinds
        try:
            grown = self.series.read_new()
            self.rewinds += self.series.rewinds > rewinds
        except FileNotFoundError:
            grown = False  # no step logged yet
        except (OSError, RecordError) as exc:
            self._failed(str(exc) if isinstance(exc, RecordError) else f"{self.series.path}: cannot read ({exc}).")
            return record
        if record is None and not grown:
            return None
        current.attach_series(self.series.series)
        return current

    def _read_record(self) -> RunRecord | None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._failed(f"{self.path}: cannot read ({exc.strerror or exc}).")
            return None
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._version:
            return None
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
            record = parse_record(data.decode("utf-8"), str(self.path))
        except OSError as exc:  # replaced or removed between stat and open
            self._failed(f"{self.path}: cannot read ({exc.strerror or exc}).")
            return None
        except UnicodeDecodeError:
            self._failed(f"{self.path}: not UTF-8 text.")
            return None
        except RecordError as exc:  # half-written (by a writer that does not replace atomically), or not a record
            self._failed(str(exc))
            return None
        self._version = (st.st_ino, st.st_mtime_ns, st.st_size)
        self.failures, self.error = 0, None
        return record

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.error = reason
        return None


def _plan_known(record: RunRecord) -> bool:
    """Whether the record's spec is the run's plan (epochs, batch size, dataset): a preset run's. A script run's
    spec holds defaults where the script did not say (its ScriptInfo tells which it said), a TensorBoard log's
    says nothing (a log holds steps and values only)."""
    return record.script is None and record.preset != TENSORBOARD


def _batch_size_known(record: RunRecord) -> bool:
    """Whether spec.batch_size is the run's, so that throughput is in samples (else training steps) per second."""
    if record.script is not None:
        return record.script.batch_size is not None
    return record.preset != TENSORBOARD


def _steps_between(record: RunRecord, start: int, end: int) -> int:
    """Training steps from loss point `start` (0: the run's start) to point `end` (exclusive): by the loss series'
    step axis (0-based steps: a framework may log every n steps, HF's 1-based global step counts one more), else
    one per point."""
    series = record.series.get(record.loss_series) if record.loss_series else None
    if series is None or not 0 < end <= len(series):
        return end - start
    before = int(series.steps[start - 1]) + 1 if start > 0 else 0
    return max(int(series.steps[end - 1]) + 1 - before, 0)


def _logged_steps(record: RunRecord, start: int, end: int) -> tuple[int, ...] | None:
    """The steps that the loss points `start` to `end` (exclusive) were logged at, for a run that may log every n
    steps (a script, a framework, a TensorBoard log); None for a preset run (one point per step, from 0)."""
    series = record.series.get(record.loss_series) if record.loss_series else None
    if _plan_known(record) or series is None or len(series) < end:
        return None
    return tuple(int(step) for step in series.steps[start:end].tolist())


def _heading(record: RunRecord) -> tuple[object, ...]:
    """What a RunStarted says of a script run's settings and plan (its batch size goes with each BatchLosses)."""
    return record.config, record.script.epochs if record.script is not None else None


def _device_text(record: RunRecord) -> str:
    """As describe_device words it in the training process; "" for a TensorBoard log (it does not say)."""
    if record.preset == TENSORBOARD:
        return ""
    env = record.env
    return cpu_device(env.threads) if env.device_type == "cpu" else env.device


def _seconds_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


class EpochClock:
    """The training throughput of the epoch in progress, from the versions of a run file seen so far.

    The file says how many losses there are and when it was written (heartbeat_at), not when the
    current epoch began. Between two versions in the same epoch the loop trained (heartbeat delta) for
    the new losses; an interval with no new loss (a pause, or the evaluation) is left out. Until two
    such versions are seen, the epoch's start is estimated from the run's start and the finished
    epochs' durations.
    """

    def __init__(self) -> None:
        self.epoch = 0
        """The epoch in progress at the last version seen."""
        self.last: tuple[int, datetime] | None = None
        """(losses, heartbeat_at) of the last version seen."""
        self.counted_from = 0
        """Losses of this epoch already there when it was first seen (not timed here)."""
        self.train_s = 0.0
        """Training seconds of this epoch observed between versions."""

    def observe(self, record: RunRecord, bpe: int) -> None:
        steps, beat = len(record.batch_losses), record.heartbeat_at
        # the epoch of the last loss, or the next one once the last has its epoch record (evaluated)
        epoch = max(-(-steps // bpe) if bpe else 0, len(record.epochs) + 1)
        if self.last is None or epoch != self.epoch:
            # a new epoch, or the first sight: time it from here (at its very start when the version saved at
            # the previous epoch's end was seen)
            self.epoch, self.counted_from, self.train_s = epoch, steps, 0.0
        elif steps > self.last[0]:
            self.train_s += max((beat - self.last[1]).total_seconds(), 0.0)
        self.last = (steps, beat)

    def rate(self, record: RunRecord, epoch: int, samples: int) -> float:
        bs = record.spec.batch_size
        if epoch == self.epoch and self.train_s > 0 and self.last is not None:
            bpe = record.batches_per_epoch or record.spec.batches_per_epoch()
            timed = min(self.last[0], epoch * bpe) - max(self.counted_from, (epoch - 1) * bpe)
            if timed > 0:
                return timed * bs / self.train_s
        return _estimated_rate(record, epoch, samples)


def _estimated_rate(record: RunRecord, epoch: int, samples: int) -> float:
    """Samples per second of the epoch in progress, from one version of the file.

    A run never resumed began its epoch in progress when it started plus the durations of its finished
    epochs (pauses are not in the file: a paused epoch looks slower than it is). A resumed run's file
    does not say which epochs came after the resume: the last finished epoch's rate stands in until a
    second version times this one.
    """
    finished = [e for e in record.epochs if e.epoch < epoch]
    if record.resumed_at and finished:
        return finished[-1].samples_per_s
    began = max([record.started_at, *record.resumed_at])
    training = _seconds_between(began, record.heartbeat_at) - sum(e.duration_s for e in finished)
    return samples / training if training > 0 and samples > 0 else 0.0


def _epoch_end(record: RunRecord, epoch: int, bpe: int) -> int:
    """Training-loss points logged by the end of `epoch` (1-based): a closed epoch's own count where its record has
    one (a script run's epochs differ in length), else every `bpe` after the last such count; with `bpe` 0 (not
    known) the epoch in progress runs to the last point logged."""
    closed = record.epochs
    if epoch <= len(closed) and closed[epoch - 1].steps is not None:
        return closed[epoch - 1].steps or 0
    counted = next((i for i in range(min(epoch, len(closed)), 0, -1) if closed[i - 1].steps is not None), 0)
    base = (closed[counted - 1].steps or 0) if counted else 0
    if bpe:
        return base + (epoch - counted) * bpe
    return max(base, len(record.batch_losses)) + (epoch - len(closed) - 1 if epoch > len(closed) else 0)


class RunTracker:
    """One run file: what has been emitted of it so far, and the events that its next version adds."""

    def __init__(self, path: Path, fallback_index: int = 0, reader: RecordReader | None = None) -> None:
        self.path = Path(path)
        self.reader: RecordReader = reader if reader is not None else RunFileReader(path)
        self.fallback_index = fallback_index
        self.record: RunRecord | None = None
        self.steps = 0
        """Batch losses emitted."""
        self.epochs = 0
        """Epochs emitted."""
        self.finished: str | None = None
        """The status a RunFinished was emitted with."""
        self.reported_error: str | None = None
        self.abandoned: str | None = None
        """Why this file is not watched: it has never been read, and no live process writes its folder."""
        self.clock = EpochClock()
        self.points_sent: dict[str, int] = {}
        """Points emitted per named series (MetricPoints)."""
        self.rewinds = 0
        """The reader's rewinds already replayed."""

    def poll(self) -> list[Event]:
        record = self.reader.read()
        events: list[Event] = []
        if record is not None:
            self.abandoned = None
            events = self.update(record)
        elif self.record is not None and self.finished is None:
            # an unchanged 'running' file: its process may have died since the last look
            events = self._finish_if_ended(self.record)
        if self.reader.failures >= REPORT_AFTER_FAILURES and self.reader.error != self.reported_error:
            self.reported_error = self.reader.error
            if self.record is None and folder_writer_alive(self.path.parent) is not True:
                # tuitrain writes run files whole (atomically): one that stays unreadable while no tuitrain process
                # holds its folder will not become readable by waiting
                self.abandoned = self.reader.error
                events.append(LogMessage(f"Cannot read {self.path.name} (no process writes it): {self.reader.error}"))
            else:
                events.append(LogMessage(f"Cannot read {self.path.name} (still trying): {self.reader.error}"))
        return events

    @property
    def run_index(self) -> int:
        if self.record is not None and self.record.run_index is not None:
            return self.record.run_index
        return self.fallback_index

    def batches_per_epoch(self, record: RunRecord) -> int:
        """0 where not known: a script run that did not say (its logged points are not batches of the spec), a
        TensorBoard log."""
        if record.preset == TENSORBOARD:
            return 0
        if record.script is not None:
            return record.batches_per_epoch or 0
        return record.batches_per_epoch or record.spec.batches_per_epoch()  # older files lack the field

    def train_size(self, record: RunRecord) -> int:
        """0 where not known, as batches_per_epoch."""
        if record.preset == TENSORBOARD:
            return 0
        if record.script is not None:
            return record.train_size or 0
        return record.train_size or record.spec.train_size()

    def test_size(self, record: RunRecord) -> int:
        """0 where not known: a script run that did not say, a TensorBoard log."""
        said = record.test_size or (record.epochs[0].test_total if record.epochs else 0)
        return said or (record.spec.test_size() if _plan_known(record) else 0)

    def update(self, record: RunRecord) -> list[Event]:
        """The events that take a watcher from the last version it saw to this one."""
        events: list[Event] = []
        previous = self.record
        if previous is None or self._restarted(previous, record):
            # first sight, or the run started over (resumed, or a new run in the same file): replay it all
            self.steps, self.epochs, self.finished = 0, 0, None
            self.clock = EpochClock()
            self.points_sent = {}
            self.rewinds = self.reader.rewinds
            events.append(self._started(record))
        events.extend(self._metric_points(record))
        self.record = record
        bpe = self.batches_per_epoch(record)
        self.clock.observe(record, bpe)
        losses = record.batch_losses
        while True:
            # an epoch is announced once all of its losses have been
            while self.epochs < len(record.epochs) and self.steps >= min(
                len(losses), _epoch_end(record, record.epochs[self.epochs].epoch, bpe)
            ):
                events.append(self._epoch_ended(record, self.epochs))
                self.epochs += 1
            if self.steps >= len(losses):
                break
            epoch = 1
            while _epoch_end(record, epoch, bpe) <= self.steps:
                epoch += 1
            start = _epoch_end(record, epoch - 1, bpe) if epoch > 1 else 0
            end = min(len(losses), _epoch_end(record, epoch, bpe))
            events.append(self._batch_losses(record, epoch, start, self.steps, end, bpe))
            self.steps = end
        events.extend(self._finish_if_ended(record))
        return events

    def _metric_points(self, record: RunRecord) -> list[Event]:
        """The named series' points appended since the last look (the loss series goes as BatchLosses)."""
        events: list[Event] = []
        for name, series in record.series.items():
            sent = self.points_sent.get(name, 0)
            if name == record.loss_series or len(series) <= sent:
                continue
            self.points_sent[name] = len(series)
            steps, values = series.steps[sent:], series.values[sent:]
            events.append(MetricPoints(record.id, name, tuple(steps.tolist()), tuple(values.tolist())))
        return events

    def _restarted(self, previous: RunRecord, record: RunRecord) -> bool:
        return (
            record.id != previous.id
            or record.started_at != previous.started_at
            or len(record.batch_losses) < self.steps
            or len(record.epochs) < self.epochs
            or self.reader.rewinds > self.rewinds
            or (self.finished is not None and record.status == "running" and effective_status(record) == "running")
            # a framework's logger starts its run before it has the config and plan: said again, before any step
            or (self.steps == 0 and self.epochs == 0 and _heading(record) != _heading(previous))
        )

    def _finish_if_ended(self, record: RunRecord) -> list[Event]:
        status = effective_status(record)
        if status == "running" or self.finished is not None:
            return []
        self.finished = status
        error = record.error
        if status == "crashed" and error is None:
            error = "the training process is gone (killed, or its machine went down); the file holds what it saved last"
        return [run_finished(record, self.run_index, self.path, status=status, error=error)]

    def _started(self, record: RunRecord) -> RunStarted:
        return RunStarted(
            run_id=record.id,
            label=record.label,
            run_index=self.run_index,
            run_count=max(record.run_count or 1, self.run_index + 1),
            spec=record.spec,
            device=_device_text(record),
            train_size=self.train_size(record),
            test_size=self.test_size(record),
            batches_per_epoch=self.batches_per_epoch(record),
            start_epoch=1,
            path=self.path,
            config=record.config,
            host=record.env.host,
            epochs_known=record.script.epochs is not None if record.script is not None else _plan_known(record),
            has_epochs=record.preset != TENSORBOARD,
            loss_series=record.loss_series,
        )

    def _batch_losses(
        self, record: RunRecord, epoch: int, epoch_start: int, start: int, end: int, bpe: int
    ) -> BatchLosses:
        train_size = self.train_size(record)
        elapsed = _seconds_between(record.started_at, record.heartbeat_at)
        finished = next((e for e in record.epochs if e.epoch == epoch), None)
        if _plan_known(record):
            batch = end - epoch_start
            samples = batch * record.spec.batch_size
            samples = min(samples, train_size) if train_size else samples
            # a finished epoch says its own rate; the epoch in progress is timed from the file's versions
            rate = finished.samples_per_s if finished is not None else self.clock.rate(record, epoch, samples)
        else:
            # a script or a framework logs every n steps: its step axis counts the steps, its batch size (where said)
            # the samples; else the rate is in steps per second (BatchLosses.batch_size_known)
            batch = _steps_between(record, epoch_start, end)
            samples = batch * (record.spec.batch_size if _batch_size_known(record) else 1)
            if finished is not None:
                seconds = finished.duration_s
            else:
                before = sum(e.duration_s for e in record.epochs if e.epoch < epoch)
                seconds = _seconds_between(record.started_at, record.heartbeat_at) - before
            rate = samples / seconds if seconds > 0 else 0.0
            samples = min(samples, train_size) if train_size else samples
        return BatchLosses(
            run_id=record.id,
            epoch=epoch,
            first_step=start,
            losses=tuple(record.batch_losses[start:end]),
            batch=batch,
            batches_per_epoch=bpe,
            samples_done=samples,
            train_size=train_size,
            samples_per_s=rate,
            elapsed_s=elapsed,
            batch_size_known=_batch_size_known(record),
            steps=_logged_steps(record, start, end),
        )

    def _epoch_ended(self, record: RunRecord, i: int) -> EpochEnded:
        e = record.epochs[i]
        # an open-ended script run's spec counts one epoch more than it has, until it ends: not a plan
        planned = _plan_known(record) or (record.script is not None and record.script.epochs is not None)
        return EpochEnded(
            run_id=record.id,
            label=record.label,
            run_index=self.run_index,
            epochs=record.spec.epochs if planned or record.status != "running" else 0,
            **e.event_fields(),
        )


class Follower:
    """Follows a run file, an invocation folder, or the newest invocation in a runs folder.

    Satisfies the app's event-source protocol (title, control, run(sink), stop(), result_folder()):
    control is None because a watched run is controlled by the process that trains it; `remote` asks that
    process to pause or stop its runs (remote_control), once a live one that takes requests holds the folder.
    """

    control: RunControl | None = None

    def __init__(self, target: Path, poll_s: float = POLL_S) -> None:
        self.target = Path(target).expanduser()
        if not self.target.exists():
            raise TuitrainError(f"{self.target}: no such run file or folder. Pass a run file (.json) or a runs folder.")
        self.tensorboard = is_event_file(self.target) or (
            self.target.is_dir()
            and not is_invocation_folder(self.target)
            and newest_invocation(self.target) is None
            and bool(log_folders(self.target))
        )
        """Watching TensorBoard log folders (each a run), not run files."""
        self.single_file = self.target.is_file() and not self.tensorboard
        if self.tensorboard:
            self.folder: Path | None = self.target.parent if self.target.is_file() else self.target
        elif self.single_file:
            self.folder = self.target.parent
        elif is_invocation_folder(self.target):
            self.folder = self.target
        else:
            self.folder = None  # a runs folder: the newest invocation in it, once there is one
        self.poll_s = poll_s
        self.trackers: dict[Path, RunTracker] = {}
        self._stop = threading.Event()
        self._said_waiting = False
        self.writer_gone = False
        """A detached training process ended before writing any run file (nothing more will come)."""
        self.remote: RemoteControls | None = None
        """Requests to the trainer of the folder, and its state as read at each poll (run files only)."""
        self.title = f"Watching {self.target}"

    @property
    def runs_dir(self) -> Path:
        """The runs folder the target belongs to (for the app's home screen)."""
        folder = self.target.parent if self.single_file else self.target
        return folder.parent if is_invocation_folder(folder) else folder

    # -- polling ------------------------------------------------------------------------------------

    def poll(self) -> list[Event]:
        """Look at the files once; the events since the last look, in order."""
        events: list[Event] = []
        if self.folder is None:  # decided at the first sight of run files: here, or in an invocation below
            self.folder = self.target if is_invocation_folder(self.target) else newest_invocation(self.target)
            if self.folder is None and log_folders(self.target):  # a TensorBoard writer started here
                self.tensorboard, self.folder = True, self.target
            if self.folder is None:
                if not self._said_waiting:
                    self._said_waiting = True
                    events.append(
                        LogMessage(
                            f"Waiting for a run (run files or TensorBoard event files) to start in {self.target}…"
                        )
                    )
                return events
        if self.tensorboard:
            paths = [self.folder] if self.target.is_file() else log_folders(self.folder)
        else:
            paths = [self.target] if self.single_file else run_files(self.folder)
            if self.remote is None:
                self.remote = RemoteControls(self.folder)
            self.remote.refresh()  # before the runs: a run shown as it pauses is shown paused
        for path in paths:
            tracker = self.trackers.get(path)
            if tracker is None:
                reader = TensorBoardRunReader(path) if self.tensorboard else None
                tracker = self.trackers[path] = RunTracker(path, fallback_index=len(self.trackers), reader=reader)
            events.extend(tracker.poll())
            if tracker.record is not None and tracker.record.preset:
                self.title = f"{tracker.record.preset} — watching {self.folder}"
        if not self.trackers and not self._said_waiting:
            self._said_waiting = True
            events.append(LogMessage(f"Waiting for the first run file in {self.folder}…"))
        if not self.trackers and not self.writer_gone and detached_writer_died(self.folder):
            self.writer_gone = True
            events.append(
                LogMessage(
                    f"The training process ended before writing a run file; see {self.folder / DETACHED_LOG}"
                    + (f": {last_line}" if (last_line := last_log_line(self.folder / DETACHED_LOG)) else ".")
                )
            )
        return events

    @property
    def done(self) -> bool:
        """Every run has ended and no more will start."""
        if self.writer_gone:
            return True
        trackers = list(self.trackers.values())
        if any(t.record is None and t.abandoned is None and t.path.exists() for t in trackers):
            return False  # a file not read yet: its run may start, or why it cannot be read is still to be said
        seen = [t for t in trackers if t.record is not None]
        if not seen:
            return bool(trackers)  # files that nothing writes and that cannot be read: nothing will come
        if any(t.finished is None for t in seen):
            return False
        if self.single_file or self.tensorboard:
            return True  # a TensorBoard log plans no runs: every run seen has ended
        if len(seen) >= self.planned_runs(seen):
            return True
        assert self.folder is not None  # run files were seen, so their folder is known
        writer = folder_writer_alive(self.folder)
        if writer is not None:  # the process writing the folder: gone, no more runs start
            return not writer
        last = max((t.record for t in seen if t.record is not None), key=lambda r: r.started_at)
        # the writer stopped early (Ctrl-C, a signal): no more runs once its process is gone
        if last.env.host == socket.gethostname() and last.env.pid:
            return not training_process_alive(last)
        ended = last.ended_at or last.heartbeat_at
        return _seconds_between(ended, datetime.now(timezone.utc)) > STALE_AFTER_S

    def planned_runs(self, seen: list[RunTracker]) -> int:
        counts = [t.record.run_count for t in seen if t.record is not None and t.record.run_count]
        if counts:
            return max(counts)
        assert self.folder is not None  # run files were seen, so their folder is known
        try:
            return len(json.loads((self.folder / PLAN_FILE).read_text(encoding="utf-8"))["runs"])
        except (OSError, ValueError, KeyError, TypeError):
            return 1 << 30  # unknown: the writer's process decides

    # -- event-source protocol ----------------------------------------------------------------------

    def run(self, sink: Sink) -> None:
        """Deliver events to `sink` until every run has ended or stop() is called (on a worker thread)."""
        while not self._stop.is_set():
            for event in self.poll():
                sink(event)
            if self.done:
                return
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()

    def control_for(self, run_id: str) -> RunControl | None:
        return None  # controlled by the process that trains it

    def result_folder(self) -> Path | None:
        return self.folder


def detached_writer_died(folder: Path) -> bool:
    """True when the folder's `--detach`ed training process (this host) is gone; False if unknown or alive."""
    try:
        info = json.loads((folder / DETACHED_PID).read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return host == socket.gethostname() and not pid_alive(pid)


def last_log_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")[:300]
