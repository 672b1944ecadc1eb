"""The fused executor: groups of runs that fuse (train.fused_tasks.fusion_plan: fresh runs of one architecture on a
GPU, differing in learning rate or seed) trained in this process, each group as one batched program
(train.fused), before the scheduler hands out the rest.

On one GPU a Model B step leaves the device mostly idle, and worker processes time-slice it rather than run side by
side (issue 28's measurements): one process stepping the runs together is the fast way. Each run keeps its own run
file, checkpoint, events and controls: the invocation's `on_start` gives each its own RunControl (the app pauses or
stops one run of a group with it, which takes that run out of the group), and the invocation's stop reaches them
all. The files are written here, as by a worker in this process. A group that cannot start here (TaskRefused) goes
back to the scheduler, whose workers train its runs alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tuitrain.core.control import RunControl
from tuitrain.core.errors import RecordError, RunFilesError
from tuitrain.core.events import LogMessage, Sink
from tuitrain.core.tasks import RecordSaved, RunTask, TaskDone, TaskEvent, TaskRefused, WorkerMessage
from tuitrain.records import RunRecord, parse_record, read_series_of
from tuitrain.train.data import MnistArrays
from tuitrain.train.fused_tasks import train_fused_tasks


@dataclass
class FusedExecutor:
    """Train groups of tasks fused, in this process (see the module's docstring)."""

    sink: Sink
    control: RunControl
    on_start: Callable[[RunTask], tuple[RunTask, RunControl]]
    """As the scheduler's: the task as sent and the run's own controls."""
    records: dict[int, RunRecord] = field(default_factory=dict)
    """Each trained run's record as it ended, by index."""
    refused: list[RunTask] = field(default_factory=list)
    """Tasks of groups that could not start here: for the scheduler."""
    files_error: RunFilesError | None = None

    def run(self, groups: list[list[RunTask]], arrays: MnistArrays) -> None:
        """Train each group in turn until stopped; raises RunFilesError (once the runs have ended) when the folder
        cannot take the files."""
        for group in groups:
            if self.control.stop_all.is_set() or self.files_error is not None:
                break
            self.run_group(group, arrays)
        if self.files_error is not None:
            raise self.files_error

    def run_group(self, group: list[RunTask], arrays: MnistArrays) -> None:
        tasks, controls = [], {}
        for task in group:
            task, own = self.on_start(task)
            tasks.append(task)
            # the run's own pause and stop, and the invocation's stop
            controls[task.index] = RunControl(stop_run=own.stop_run, stop_all=self.control.stop_all, paused=own.paused)
        last_text: dict[int, str] = {}
        by_index = {t.index: t for t in tasks}

        def send(message: WorkerMessage) -> None:
            if isinstance(message, TaskEvent):
                self.sink(message.event)
            elif isinstance(message, RecordSaved):
                last_text[message.index] = message.text
            elif isinstance(message, TaskDone):
                if message.index in last_text:
                    record = self.records[message.index] = parse_record(last_text[message.index])
                    with contextlib.suppress(RecordError):  # a log that cannot be read: the record without its points
                        read_series_of(record, by_index[message.index].run_file.parent)
                if message.files_error is not None and self.files_error is None:
                    self.files_error = RunFilesError(message.files_error)
                    self.control.stop_all.set()
            elif isinstance(message, TaskRefused):
                self.sink(LogMessage(f"{by_index[message.index].label} cannot train fused: {message.error}"))
                self.refused.append(by_index[message.index])

        train_fused_tasks(tasks, arrays, send, controls, write_files=True)
