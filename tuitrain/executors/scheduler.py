"""Training a preset's runs, `jobs` at a time, each by a worker (tuitrain.train.worker's `train_task`).

The invoking process hands the runs to the workers in order as they free up (a run goes to the least-loaded
GPU, or the CPU), forwards each run's controls to its worker, passes the workers' events on to the front
end's sink, and writes every run file, series log frame and checkpoint that a worker sends: one writer per file,
atomic as with one run at a time (a worker in this process, executors.inprocess, writes its own, as the loop of a
lone run does). A worker that dies mid-run leaves its run 'crashed' with the reason while the other runs go on;
`--resume` continues it. How workers are started is the executor's business (executors.inprocess for one run at a time,
executors.local for worker processes, executors.ray for a Ray cluster): the scheduling, the controls and the file
writing are the same. The scheduler knows the runs only as tasks (core.tasks.RunTask): what the invocation keeps
track of, it learns through callbacks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Protocol

from tuitrain.core.atomic import atomic_write_bytes, atomic_write_text
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RecordError, RunFilesError
from tuitrain.core.events import LogMessage, RunWaiting, Sink
from tuitrain.core.serieslog import SeriesWriter, series_path_for
from tuitrain.core.status import RunStatus
from tuitrain.core.tasks import (
    CheckpointSaved,
    ControlState,
    RecordSaved,
    RunTask,
    SeriesAppended,
    TaskDone,
    TaskEvent,
    TaskRefused,
    WorkerMessage,
    WorkerReady,
)
from tuitrain.records import RunRecord, parse_record, read_series_of, record_text, run_finished, utc_now
from tuitrain.train.checkpoint import checkpoint_path
from tuitrain.train.data import MnistArrays
from tuitrain.train.loop import cannot_write

POLL_S = 0.1
"""How often the controls are forwarded and the workers checked for life, at most."""
STOP_WAIT_S = 5.0
"""How long a worker gets to exit after it is told to, before it is killed."""


class Worker(Protocol):
    """One worker as the scheduler sees it: messages both ways, and whether it is still there."""

    def send(self, message: object) -> None: ...

    def messages(self) -> tuple[list[WorkerMessage], bool]:
        """What arrived since the last call (without waiting), and whether the worker is gone (all it sent read)."""

    def handle(self) -> object:
        """Something `multiprocessing.connection.wait` can wait on for this worker's messages."""

    def exit_reason(self) -> str | None:
        """Why the worker is gone (None while it lives): a killing signal or exit status, with its last words."""

    def close(self, *, now: bool = False) -> None:
        """Tell it to exit; kill it if it does not within STOP_WAIT_S, or at once with `now` (it is abandoned
        mid-run: its run's file is already saved as it ends; a run in this process is stopped and saves itself)."""


def read_messages(conn: Connection) -> tuple[list[WorkerMessage], bool]:
    """What arrived on a worker's connection (without waiting), and whether it is closed (all it sent read)."""
    out = []
    try:
        while conn.poll():
            out.append(conn.recv())
    except (EOFError, OSError):  # the worker is gone, and everything it sent is read
        return out, True
    return out, False


@dataclass
class Slot:
    """A worker and the run it trains (if any)."""

    worker: Worker
    ready: bool = False
    task: RunTask | None = None
    sent: ControlState | None = None
    """The controls last sent for the task."""


@dataclass
class Scheduler:
    """Train runs up to `jobs` at a time, on workers from `start_worker`.

    `on_start(task)` is called as a run goes to a worker: it gives the task as sent (a resumed run's checkpoint read
    then) and the run's own controls (the front end pauses or stops that run alone with them); `on_refused(task)`
    when its worker could not start it after all (it counts as not started). The runs' records, as they ended, are
    in `records` afterwards."""

    sink: Sink
    control: RunControl
    start_worker: Callable[[], Worker]
    jobs: int
    on_start: Callable[[RunTask], tuple[RunTask, RunControl]]
    on_refused: Callable[[RunTask], None]
    announce_queue: bool = True
    """Say of each run that waits for a worker that it does (not where one run at a time is the plan)."""
    gpus: list[int] = field(default_factory=list)
    """GPUs the runs may use: each run goes to the least loaded one (none: as each run's spec says)."""
    slots: list[Slot] = field(default_factory=list)
    records: dict[int, RunRecord] = field(default_factory=dict)
    """Each trained run's record, by index."""
    last_text: dict[int, str] = field(default_factory=dict)
    """Each run's run file as last written."""
    series: dict[int, SeriesWriter] = field(default_factory=dict)
    """The series log of each run whose worker sends its frames, open while the run trains."""
    files_error: RunFilesError | None = None
    queued: set[int] = field(default_factory=set)
    """Runs said to be waiting for a worker (every worker busy)."""
    controls: dict[int, RunControl] = field(default_factory=dict)
    """The own controls of each run handed to a worker, by index."""
    pending: deque[RunTask] = field(default_factory=deque)
    """The runs not handed to a worker yet."""
    room_waited: set[int] = field(default_factory=set)
    """Runs said to be waiting for room on the cluster."""
    room_lock: threading.Lock = field(default_factory=threading.Lock)
    """Workers' stream threads say that they wait for room at once."""

    def start(self) -> None:
        """Start the workers (a worker process imports torch meanwhile: start them before loading the data)."""
        self.slots = [Slot(self.start_worker()) for _ in range(self.jobs)]

    def run(self, tasks: list[RunTask], arrays: MnistArrays) -> None:
        """Hand out `tasks` (each run still to train, in order) and serve the workers until every run has ended (or,
        once stopped, every running one)."""
        self.pending = pending = deque(tasks)
        try:
            while pending or any(s.task for s in self.slots):
                if self.control.stop_all.is_set():
                    pending.clear()
                for slot in self.slots:
                    if slot.ready and slot.task is None and pending:
                        self.assign(slot, pending.popleft())
                self.announce_queued()
                self.forward_controls()
                ready = wait([s.worker.handle() for s in self.slots], timeout=POLL_S)  # type: ignore[misc]
                for slot in list(self.slots):
                    gone = self.serve(slot, arrays) if slot.worker.handle() in ready else False
                    if gone or slot.worker.exit_reason() is not None:
                        self.lost(slot)
        except BaseException:  # a second stop signal: leave now, the files saying how each run stood
            with self.control.uninterrupted():
                for slot in self.slots:
                    if slot.task is not None:
                        slot.worker.close(now=True)  # a process is killed; a run in this process saves itself first
                        self.serve(slot, arrays)  # what it said last
                    if slot.task is not None:
                        self.end_run(slot.task, "interrupted", None)
            raise
        if self.files_error is not None:
            raise self.files_error

    def close(self) -> None:
        """End the workers: at once those still training (left after a second stop signal, say) or still starting
        (nothing to lose, and a worker importing torch reads nothing for seconds)."""
        slots, self.slots = self.slots, []
        for index in list(self.series):
            self.close_series(index)
        try:
            for slot in slots:
                slot.worker.close(now=slot.task is not None or not slot.ready)
        except BaseException:  # a second stop signal while waiting for one to exit: end them all now
            for slot in slots:
                slot.worker.close(now=True)
            raise

    # --- runs ----------------------------------------------------------------------------------------

    def assign(self, slot: Slot, task: RunTask) -> None:
        task, self.controls[task.index] = self.on_start(replace(task, gpu=self.least_loaded_gpu()))
        slot.task, slot.sent = task, None
        slot.worker.send(task)

    def announce_queued(self) -> None:
        """Say once of each run still to start that it waits for a worker, once every worker trains a run."""
        if not self.announce_queue or not self.pending or any(s.task is None for s in self.slots):
            return
        if self.control.stop_all.is_set():
            return
        at_once = f"{len(self.slots)} runs train at once" if len(self.slots) != 1 else "1 run trains at a time"
        for task in self.pending:
            if task.index not in self.queued:
                self.queued.add(task.index)
                self.post_waiting(task, f"waiting for a worker ({at_once})")

    def waiting_for_room(self, ahead: int, most: int) -> None:
        """A worker's actor is not placed on the cluster yet (each worker's stream thread calls this once). The
        `ahead` runs next to start go to workers with room (a worker within the room only takes a while to start);
        the next run after them not yet said to wait waits for room, and at most `most` runs (the workers beyond
        the cluster's room) are said to, once each."""
        with self.room_lock:
            if len(self.room_waited) >= most:
                return
            task = next((t for t in list(self.pending)[ahead:] if t.index not in self.room_waited), None)
            if task is None:
                return
            self.room_waited.add(task.index)
        self.post_waiting(task, "waiting for room on the Ray cluster")

    def post_waiting(self, task: RunTask, reason: str) -> None:
        """Say that a run cannot start yet, and why."""
        self.sink(RunWaiting(task.run_id, task.label, task.index, task.run_count, reason))

    def least_loaded_gpu(self) -> int | None:
        if not self.gpus:
            return None
        load = {g: 0 for g in self.gpus}
        for slot in self.slots:
            if slot.task is not None and slot.task.gpu in load:
                load[slot.task.gpu] += 1
        return min(self.gpus, key=lambda g: load[g])

    def forward_controls(self) -> None:
        stop_all = self.control.stop_all.is_set()
        for slot in self.slots:
            task = slot.task
            if task is None or not slot.ready:
                continue
            own = self.controls[task.index]
            state = ControlState(
                task.index,
                paused=own.paused.is_set() or self.control.paused.is_set(),
                stop_run=own.stop_run.is_set(),
                stop_all=stop_all,
            )
            if state != slot.sent:
                with contextlib.suppress(OSError):  # a dead worker is noticed by the loop
                    slot.worker.send(state)
                slot.sent = state

    # --- what workers say ------------------------------------------------------------------------------

    def serve(self, slot: Slot, arrays: MnistArrays) -> bool:
        """Act on what the worker sent; True when it is gone."""
        messages, gone = slot.worker.messages()
        for message in messages:
            self.take(slot, message, arrays)
        return gone

    def take(self, slot: Slot, message: WorkerMessage, arrays: MnistArrays) -> None:
        task = slot.task
        if isinstance(message, WorkerReady):
            slot.ready = True
            slot.worker.send(arrays)
        elif isinstance(message, TaskEvent):
            self.sink(message.event)
        elif isinstance(message, RecordSaved):
            self.last_text[message.index] = message.text
            if not message.written and task is not None:
                self.write(task, lambda: atomic_write_text(task.run_file, message.text))
        elif isinstance(message, SeriesAppended):
            if task is not None:
                self.write(task, lambda: self.series_log(task).append_frame(message.frame))
        elif isinstance(message, CheckpointSaved):
            if task is not None:
                self.write(task, lambda: atomic_write_bytes(checkpoint_path(task.run_file), message.data))
        elif isinstance(message, TaskDone):
            self.close_series(message.index)
            if message.index in self.last_text:
                self.records[message.index] = self.ended_record(message.index, self.last_text[message.index], task)
            if message.files_error is not None:
                self.stop_for(RunFilesError(message.files_error))
            slot.task = None
        elif isinstance(message, TaskRefused):
            if task is not None:
                self.sink(LogMessage(f"{task.label} cannot start: {message.error}"))
                self.on_refused(task)
            slot.task = None

    def series_log(self, task: RunTask) -> SeriesWriter:
        """The run's series log, opened at its first frame (a resumed run's is appended to)."""
        writer = self.series.get(task.index)
        if writer is None:
            writer = self.series[task.index] = SeriesWriter(series_path_for(task.run_file))
        return writer

    def close_series(self, index: int) -> None:
        writer = self.series.pop(index, None)
        if writer is not None:
            writer.close()

    def ended_record(self, index: int, text: str, task: RunTask | None) -> RunRecord:
        """A run's record as it ended (its file's last text), with its series log's points, as read_record gives."""
        record = parse_record(text)
        if task is not None:
            with contextlib.suppress(RecordError):  # a log that cannot be read: the record without its points
                read_series_of(record, task.run_file.parent)
        return record

    def write(self, task: RunTask, write: Callable[[], object]) -> None:
        """Write a run's file; if the folder cannot take it, stop every run (the others would fail the same way)
        and raise RunFilesError once they have stopped."""
        if self.files_error is not None:
            return
        try:
            write()
        except OSError as exc:
            self.stop_for(cannot_write(exc, task.run_file.parent))

    def stop_for(self, error: RunFilesError) -> None:
        self.files_error = self.files_error or error
        self.control.stop_all.set()

    def lost(self, slot: Slot) -> None:
        """A worker is gone: its run (if any) crashed with the reason; a new worker takes its place if runs remain."""
        deadline = time.monotonic() + 2.0  # its socket closed as it died: the exit status follows at once
        while slot.worker.exit_reason() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        reason = slot.worker.exit_reason() or "the worker is gone"
        if slot.task is not None:
            self.close_series(slot.task.index)
            self.end_run(slot.task, "crashed", reason)
        slot.worker.close()
        self.slots.remove(slot)
        if self.pending and not self.control.stop_all.is_set():
            self.slots.append(Slot(self.start_worker()))

    def end_run(self, task: RunTask, status: RunStatus, reason: str | None) -> None:
        """Save a run whose worker can no longer say how it ended: from its last saved state, as `status`."""
        self.close_series(task.index)
        text = self.last_text.get(task.index)
        if text is None:  # died before its first save: nothing on disk, so it counts as not started
            self.on_refused(task)
            if reason:
                self.sink(LogMessage(f"{task.label}: {reason}; it had not started training."))
            return
        record = self.ended_record(task.index, text, task)
        if record.status == "running":
            record.status, record.ended_at = status, utc_now()
            record.error = reason or record.error
            self.write(task, lambda: atomic_write_text(task.run_file, record_text(record)))
        self.records[task.index] = record
        if reason:
            self.sink(run_finished(record, task.index, task.run_file))
