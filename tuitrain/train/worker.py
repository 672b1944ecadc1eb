"""A worker: trains the runs it is sent, one at a time, and sends back everything to keep (tuitrain.core.tasks).

`train_task` is the whole job of any kind of worker (a thread of the invoking process, a local process here, or a
Ray worker: tuitrain.executors). As a local process, started by tuitrain.executors.local as
`python -m tuitrain.train.worker FD` in its own session (a Ctrl-C at the terminal reaches only the invoking
process, which stops the runs through their controls): it reads its data and tasks from the socket FD, and exits
at once when the invoking process goes away (its end of the socket closes), even mid-run: nothing trains on
unwatched, and the invoking process's last writes stay the valid files.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

import torch

from tuitrain.core.control import RunControl
from tuitrain.core.cores import cpu_share
from tuitrain.core.errors import RunFilesError, TuitrainError
from tuitrain.core.events import LogMessage, RunWaiting
from tuitrain.core.serieslog import series_path_for
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
from tuitrain.keeper import LocalRunFiles
from tuitrain.records import RunRecord
from tuitrain.train import estimate
from tuitrain.train.checkpoint import checkpoint_path, load_checkpoint
from tuitrain.train.data import MnistArrays
from tuitrain.train.device import TensorData, select_device
from tuitrain.train.loop import RunPlace, fit, new_record, reopen_record

ORPHANED_EXIT = 75
"""Exit status of a worker whose invoking process went away."""

Send = Callable[[WorkerMessage], None]


def task_device(task: RunTask) -> torch.device:
    """The device the task trains on: its GPU when it was given one (made the current CUDA device, so that the
    engine's plain "cuda" means it), else what its spec says."""
    device = select_device(task.spec.device)
    if device.type == "cuda" and task.gpu is not None:
        if task.gpu >= torch.cuda.device_count():
            raise TuitrainError(f"GPU {task.gpu} is not visible to the worker on {socket.gethostname()}.")
        torch.cuda.set_device(task.gpu)
    return device


class TensorCache:
    """The data of the last task on the device: consecutive runs with the same subset reuse it."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.data: TensorData | None = None

    def get(self, arrays: MnistArrays, device: torch.device, task: RunTask) -> TensorData:
        spec = task.spec
        gpu = torch.cuda.current_device() if device.type == "cuda" else None
        key = (str(device), gpu, spec.subset, spec.test_subset, spec.dataset)
        if key != self.key or self.data is None:
            self.data = None  # one copy at a time: GPU memory is not free
            self.data = TensorData.from_arrays(arrays, device, spec.subset, spec.test_subset, spec.dataset)
            self.key = key
        return self.data


class TaskFiles:
    """A task's run files as its worker records them (keeper.RunFiles): written here (`write_files`: a worker in the
    invoking process) and each write said in a RecordSaved, or sent to the invoking process, the files' only writer:
    each series log frame as a SeriesAppended, each run file state as a RecordSaved."""

    def __init__(self, task: RunTask, send: Send, write_files: bool) -> None:
        self.index, self.send = task.index, send
        self.local = LocalRunFiles(task.run_file) if write_files else None
        self.series_name = series_path_for(task.run_file).name

    def append(self, frame: bytes) -> None:
        if self.local is not None:
            self.local.append(frame)
        else:
            self.send(SeriesAppended(self.index, frame))

    def write(self, text: str) -> None:
        if self.local is not None:
            self.local.write(text)
        self.send(RecordSaved(self.index, text, written=self.local is not None))

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


def train_task(
    task: RunTask,
    arrays: MnistArrays,
    send: Send,
    control: RunControl,
    tensors: TensorCache,
    env: dict[str, str] | None = None,
    *,
    write_files: bool = False,
    learn_times: bool = True,
) -> None:
    """Train one run; every event, run file state, series log frame and checkpoint goes to `send`; TaskDone at the
    end, or
    TaskRefused with the reason when the run cannot start here (nothing else was sent for it then). `env`: more
    fields for the record's EnvInfo (e.g. the Ray node id). With `write_files` (a worker in the invoking process),
    the loop writes the run file and its checkpoints itself, checkpoints in the background as the next epoch
    trains, and each RecordSaved says what it wrote; a RunFilesError then ends the invocation (TaskDone says it).
    Without `learn_times` (a run side by side with others in one process), its speed is not learnt for estimates."""
    index = task.index
    files = TaskFiles(task, send, write_files)
    try:
        device = task_device(task)
        data = tensors.get(arrays, device, task)
        state = None
        if task.record_text is not None:
            record = RunRecord.model_validate_json(task.record_text)
            if task.checkpoint is not None:
                state = load_checkpoint(checkpoint_path(task.run_file), record.id, data=task.checkpoint)
            reopen_record(record, device, from_checkpoint=state is not None)
        else:
            record = new_record(
                task.spec, device, run_id=task.run_id, label=task.label, preset=task.preset, invocation=task.invocation
            )
        if env:
            record.env = record.env.model_copy(update=env)
        emit = lambda event: send(TaskEvent(index, event))  # noqa: E731
        with cpu_share(
            device.type,
            label=task.run_id,
            should_stop=control.should_stop,
            on_wait=lambda reason: emit(RunWaiting(task.run_id, task.label, index, task.run_count, reason)),
            log=lambda text: emit(LogMessage(text)),
        ) as cores:
            fit(
                task.spec,
                emit,
                control,
                data=data,
                record=record,
                files=files,
                place=RunPlace(
                    run_index=index,
                    run_count=task.run_count,
                    run_file=task.run_file,
                    checkpoint_file=checkpoint_path(task.run_file),
                ),
                resume=state,
                write_checkpoint=None if write_files else lambda _path, data: send(CheckpointSaved(index, data)),
                cores=cores,
            )
        if state is None and learn_times:  # a resumed run's epochs may come from another machine or load
            estimate.learn_from_run(record)
        send(TaskDone(index))
    except RunFilesError as exc:  # where this worker writes the files: the run ended, saved as far as it could be
        send(TaskDone(index, files_error=str(exc)))
    except TuitrainError as exc:
        send(TaskRefused(index, str(exc)))
    except Exception as exc:  # noqa: BLE001 - before training started (fit records its own failures)
        send(TaskRefused(index, f"{type(exc).__name__}: {exc}"))
    finally:
        files.close()


def apply_control(control: RunControl, change: ControlState) -> None:
    for flag, on in ((control.paused, change.paused), (control.stop_run, change.stop_run)):
        flag.set() if on else flag.clear()
    if change.stop_all:
        control.stop_all.set()


def serve(conn: Connection) -> None:
    """Take data, then tasks, from `conn` until it says None or closes."""
    inbox: queue.Queue[tuple[RunTask, RunControl] | MnistArrays | None] = queue.Queue()
    controls: dict[int, RunControl] = {}

    def read() -> None:  # the only reader of conn; the main thread is its only writer
        try:
            while True:
                message = conn.recv()
                if isinstance(message, ControlState):
                    if message.index in controls:
                        apply_control(controls[message.index], message)
                elif isinstance(message, RunTask):
                    controls[message.index] = RunControl()  # before any ControlState for it can arrive
                    inbox.put((message, controls[message.index]))
                else:
                    inbox.put(message)
        except (EOFError, OSError):  # the invoking process is gone: nobody writes this run's files any more
            os._exit(ORPHANED_EXIT)

    threading.Thread(target=read, name="tuitrain-worker-control", daemon=True).start()
    conn.send(WorkerReady(os.getpid(), socket.gethostname()))
    arrays = inbox.get()
    assert isinstance(arrays, MnistArrays), "the data comes first"
    tensors = TensorCache()
    while (item := inbox.get()) is not None:
        assert isinstance(item, tuple)
        task, control = item
        try:
            train_task(task, arrays, conn.send, control, tensors)
        finally:
            controls.pop(task.index, None)


def main(argv: list[str]) -> None:
    conn = Connection(int(argv[0]))
    serve(conn)
    # told to exit: every run's state is with the invoking process already; skip the interpreter's teardown
    # (seconds with torch loaded), which would hold up the invoking process's exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
