"""Training a preset's runs several at a time, each in a worker process (tuitrain.train.worker).

The invoking process hands the runs to the workers in order as they free up (a run goes to the least-loaded
GPU, or the CPU), forwards each run's controls to its worker, passes the workers' events on to the front
end's sink, and writes every run file and checkpoint itself: one writer per file, atomic as with one run at a
time. A worker that dies mid-run leaves its run 'crashed' with the reason while the other runs go on;
`--resume` continues it. How workers are started is the executor's business (local processes here; Ray in
tuitrain.executors.ray): the scheduling, the controls and the file writing are the same.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tuitrain.core.atomic import atomic_write_bytes, atomic_write_text
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RunFilesError
from tuitrain.core.events import LogMessage, RunFinished, Sink
from tuitrain.core.status import RunStatus
from tuitrain.core.tasks import (
    CheckpointSaved,
    ControlState,
    RecordSaved,
    RunTask,
    TaskDone,
    TaskEvent,
    TaskRefused,
    WorkerMessage,
    WorkerReady,
)
from tuitrain.records import RunRecord, parse_record, record_text, utc_now
from tuitrain.train.checkpoint import checkpoint_path
from tuitrain.train.data import MnistArrays
from tuitrain.train.loop import cannot_write

if TYPE_CHECKING:
    from tuitrain.session import PresetInvocation

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
        mid-run: its run's file is already saved as it ends)."""


@dataclass
class Slot:
    """A worker and the run it trains (if any)."""

    worker: Worker
    ready: bool = False
    task: RunTask | None = None
    sent: ControlState | None = None
    """The controls last sent for the task."""


@dataclass
class ParallelRuns:
    """Train `invocation`'s runs (but its kept ones) up to `invocation.jobs` at a time."""

    invocation: PresetInvocation
    sink: Sink
    control: RunControl
    start_worker: Callable[[], Worker]
    slots: list[Slot] = field(default_factory=list)
    records: dict[int, RunRecord] = field(default_factory=dict)
    last_text: dict[int, str] = field(default_factory=dict)
    """Each run's run file as last written."""
    files_error: RunFilesError | None = None
    queued: set[int] = field(default_factory=set)
    """Runs said to be waiting for a worker (every worker busy)."""

    def start(self) -> None:
        """Start the workers (they import torch meanwhile: start them before loading the data)."""
        self.slots = [Slot(self.start_worker()) for _ in range(self.invocation.jobs)]

    def run(self, arrays: MnistArrays) -> None:
        """Hand out the runs and serve the workers until every run has ended (or, once stopped, every running one)."""
        inv = self.invocation
        pending = deque(i for i in range(len(inv.runs)) if i not in inv.kept)
        self.records.update(inv.kept)
        try:
            while pending or any(s.task for s in self.slots):
                if self.control.stop_all.is_set():
                    pending.clear()
                for slot in self.slots:
                    if slot.ready and slot.task is None and pending:
                        self.assign(slot, pending.popleft())
                self.announce_queued(pending)
                self.forward_controls()
                ready = wait([s.worker.handle() for s in self.slots], timeout=POLL_S)  # type: ignore[misc]
                for slot in list(self.slots):
                    gone = self.serve(slot, arrays) if slot.worker.handle() in ready else False
                    if gone or slot.worker.exit_reason() is not None:
                        self.lost(slot, pending)
        except BaseException:  # a second stop signal: leave now, the files saying how each run stood
            with self.control.uninterrupted():
                for slot in self.slots:
                    if slot.task is not None:
                        self.end_run(slot.task, "interrupted", None)
            raise
        finally:
            inv.records = [self.records[i] for i in sorted(self.records)]
        if self.files_error is not None:
            raise self.files_error

    def close(self) -> None:
        """End the workers: at once those still training (left after a second stop signal, say) or still starting
        (nothing to lose, and a worker importing torch reads nothing for seconds)."""
        slots, self.slots = self.slots, []
        try:
            for slot in slots:
                slot.worker.close(now=slot.task is not None or not slot.ready)
        except BaseException:  # a second stop signal while waiting for one to exit: end them all now
            for slot in slots:
                slot.worker.close(now=True)
            raise

    # --- runs ----------------------------------------------------------------------------------------

    def assign(self, slot: Slot, index: int) -> None:
        inv = self.invocation
        run = inv.runs[index]
        resumed = inv.resuming.get(index)
        record_text_ = checkpoint = None
        if resumed is not None:
            record, state = resumed
            record_text_ = record.model_dump_json()
            path = checkpoint_path(self.path(index))
            checkpoint = path.read_bytes() if state is not None else None
            self.sink(LogMessage(f"Resuming {record.label} from epoch {len(state['epochs']) + 1 if state else 1}"))
        run_id = inv.run_id(index)
        task = RunTask(
            index=index,
            run_count=len(inv.runs),
            run_id=run_id,
            label=run.label,
            spec=run.spec,
            preset=inv.preset.name,
            invocation=inv.invocation_id,
            run_file=self.path(index),
            record_text=record_text_,
            checkpoint=checkpoint,
            gpu=self.least_loaded_gpu(),
        )
        inv.started.append(index)
        inv.run_controls[run_id] = RunControl()
        slot.task, slot.sent = task, None
        slot.worker.send(task)

    def announce_queued(self, pending: deque[int]) -> None:
        """Say once of each run still to start that it waits for a worker, once every worker trains a run."""
        if not pending or any(s.task is None for s in self.slots) or self.control.stop_all.is_set():
            return
        inv = self.invocation
        at_once = f"{len(self.slots)} runs train at once" if len(self.slots) != 1 else "1 run trains at a time"
        for index in pending:
            if index not in self.queued:
                self.queued.add(index)
                inv.post_waiting(
                    self.sink, inv.run_id(index), index, inv.runs[index].label, f"waiting for a worker ({at_once})"
                )

    def least_loaded_gpu(self) -> int | None:
        gpus = self.invocation.gpus
        if not gpus:
            return None
        load = {g: 0 for g in gpus}
        for slot in self.slots:
            if slot.task is not None and slot.task.gpu in load:
                load[slot.task.gpu] += 1
        return min(gpus, key=lambda g: load[g])

    def forward_controls(self) -> None:
        stop_all = self.control.stop_all.is_set()
        for slot in self.slots:
            task = slot.task
            if task is None or not slot.ready:
                continue
            own = self.invocation.run_controls[task.run_id]
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

    def path(self, index: int) -> Path:
        assert self.invocation.folder is not None
        return self.invocation.folder / self.invocation.files[index]

    # --- what workers say ------------------------------------------------------------------------------

    def serve(self, slot: Slot, arrays: MnistArrays) -> bool:
        """Act on what the worker sent; True when it is gone."""
        messages, gone = slot.worker.messages()
        for message in messages:
            self.take(slot, message, arrays)
        return gone

    def take(self, slot: Slot, message: WorkerMessage, arrays: MnistArrays) -> None:
        if isinstance(message, WorkerReady):
            slot.ready = True
            slot.worker.send(arrays)
        elif isinstance(message, TaskEvent):
            self.sink(message.event)
        elif isinstance(message, RecordSaved):
            self.last_text[message.index] = message.text
            self.write(lambda: atomic_write_text(self.path(message.index), message.text))
        elif isinstance(message, CheckpointSaved):
            self.write(lambda: atomic_write_bytes(checkpoint_path(self.path(message.index)), message.data))
        elif isinstance(message, TaskDone):
            if message.index in self.last_text:
                self.records[message.index] = parse_record(self.last_text[message.index])
            slot.task = None
        elif isinstance(message, TaskRefused):
            label = self.invocation.runs[message.index].label
            self.sink(LogMessage(f"{label} cannot start: {message.error}"))
            self.invocation.started.remove(message.index)
            slot.task = None

    def write(self, write: Callable[[], None]) -> None:
        """Write a run's file; if the folder cannot take it, stop every run (the others would fail the same way)
        and raise RunFilesError once they have stopped."""
        if self.files_error is not None:
            return
        try:
            write()
        except OSError as exc:
            self.files_error = cannot_write(exc, self.invocation.folder)
            self.control.stop_all.set()

    def lost(self, slot: Slot, pending: deque[int]) -> None:
        """A worker is gone: its run (if any) crashed with the reason; a new worker takes its place if runs remain."""
        deadline = time.monotonic() + 2.0  # its socket closed as it died: the exit status follows at once
        while slot.worker.exit_reason() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        reason = slot.worker.exit_reason() or "the worker is gone"
        if slot.task is not None:
            self.end_run(slot.task, "crashed", reason)
        slot.worker.close()
        self.slots.remove(slot)
        if pending and not self.control.stop_all.is_set():
            self.slots.append(Slot(self.start_worker()))

    def end_run(self, task: RunTask, status: RunStatus, reason: str | None) -> None:
        """Save a run whose worker can no longer say how it ended: from its last saved state, as `status`."""
        text = self.last_text.get(task.index)
        if text is None:  # died before its first save: nothing on disk, so it counts as not started
            self.invocation.started.remove(task.index)
            if reason:
                self.sink(LogMessage(f"{task.label}: {reason}; it had not started training."))
            return
        record = parse_record(text)
        if record.status == "running":
            record.status, record.ended_at = status, utc_now()
            record.error = reason or record.error
            self.write(lambda: atomic_write_text(self.path(task.index), record_text(record)))
        self.records[task.index] = record
        if reason:
            self.sink(
                RunFinished(
                    run_id=record.id,
                    label=record.label,
                    run_index=task.index,
                    status=record.status,
                    path=self.path(task.index),
                    error=record.error,
                    best_accuracy=record.best_accuracy,
                )
            )
