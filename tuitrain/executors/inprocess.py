"""A worker in the invoking process (one run at a time, `--jobs 1`): trains its runs in a thread, one after another.

It trains with the same `train_task` as a worker process, but as the loop of a lone run always did: it writes the
run files itself (each checkpoint in the background while the next epoch trains) and tells the scheduler what it
wrote; its events go straight to the front end's sink, and its runs are stopped and paused by the invocation's own
controls, so a front end that stops the runs on an event stops them at the next batch, as before. It cannot be
killed: closed at once (a second stop signal), it stops its run and waits a while for the loop to save the run as
interrupted.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from typing import Any

from tuitrain.core.control import RunControl
from tuitrain.core.events import Sink
from tuitrain.core.tasks import RunTask, TaskEvent, WorkerMessage, WorkerReady
from tuitrain.executors.scheduler import STOP_WAIT_S
from tuitrain.train.data import MnistArrays
from tuitrain.train.worker import TensorCache, train_task

THREAD_NAME = "tuitrain-train"
"""The thread that trains the runs."""


class ThreadedWorker:
    """The scheduler's Worker on a thread of this process: its messages wait in a queue, with a byte on a socket pair
    to wake the scheduler (which waits on the socket). A subclass says what a task sent to it is queued as (`take`),
    how a queued one is trained (`train`) and how a closing at once stops its runs (`stop_runs`)."""

    thread_name = THREAD_NAME

    def __init__(self) -> None:
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.wake_write.setblocking(False)
        self.outbox: queue.Queue[WorkerMessage] = queue.Queue()
        self.inbox: queue.Queue[Any] = queue.Queue()
        """What `take` queued for the thread to train; None ends it."""
        self.arrays: MnistArrays | None = None
        self.data_given = threading.Event()
        self.reason: str | None = None
        self.closed = False
        self.thread = threading.Thread(target=self.work, name=self.thread_name, daemon=True)
        self.thread.start()

    def work(self) -> None:
        try:
            self.say(WorkerReady(os.getpid(), socket.gethostname()))
            self.data_given.wait()
            while (item := self.inbox.get()) is not None:
                assert self.arrays is not None
                self.train(item, self.arrays)
        except BaseException as exc:  # noqa: BLE001 - the scheduler saves the run as crashed, with this reason
            self.reason = f"the training thread failed: {type(exc).__name__}: {exc}"
        finally:
            self.reason = self.reason or "the training thread ended"
            self.wake()

    def take(self, message: object) -> None:
        """A RunTask or ControlState sent by the scheduler."""
        raise NotImplementedError

    def train(self, item: Any, arrays: MnistArrays) -> None:
        """Train what `take` queued, on the worker's thread."""
        raise NotImplementedError

    def stop_runs(self) -> None:
        """Stop the runs training (they save themselves as interrupted)."""
        raise NotImplementedError

    def say(self, message: WorkerMessage) -> None:
        self.outbox.put(message)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer has a wake-up in it already; a closed one: nobody waits
            self.wake_write.send(b"\0")

    # --- the Worker protocol ---

    def send(self, message: object) -> None:
        if isinstance(message, MnistArrays):
            self.arrays = message
            self.data_given.set()
        elif message is None:
            self.inbox.put(None)
        else:
            self.take(message)

    def messages(self) -> tuple[list[WorkerMessage], bool]:
        gone = not self.thread.is_alive()  # before reading: a thread that ended has said everything
        with contextlib.suppress(OSError):
            while self.wake_read.recv(4096):
                pass
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.outbox.get_nowait())
        return out, gone

    def handle(self) -> object:
        return self.wake_read

    def exit_reason(self) -> str | None:
        return None if self.thread.is_alive() else self.reason

    def close(self, *, now: bool = False) -> None:
        if now:  # abandoned mid-run: stop the run, which saves itself as interrupted
            self.stop_runs()
        if self.closed:
            if now:
                self.thread.join(STOP_WAIT_S)
            return
        self.closed = True
        self.inbox.put(None)
        self.data_given.set()
        self.thread.join(STOP_WAIT_S)
        if not self.thread.is_alive():
            self.wake_read.close()
            self.wake_write.close()


class InProcessWorker(ThreadedWorker):
    """The worker of `--jobs 1`: one run at a time, with the invocation's own controls; its events go straight to the
    front end's sink."""

    def __init__(self, sink: Sink, control: RunControl) -> None:
        self.sink, self.control = sink, control
        self.tensors = TensorCache()
        super().__init__()

    def take(self, message: object) -> None:
        if isinstance(message, RunTask):
            self.inbox.put(message)
        # ControlState: the runs train with the invocation's controls themselves

    def train(self, item: Any, arrays: MnistArrays) -> None:
        self.control.stop_run.clear()  # stopped the run before: this one trains
        train_task(item, arrays, self.say, self.control, self.tensors, write_files=True)

    def stop_runs(self) -> None:
        self.control.stop_all.set()

    def say(self, message: WorkerMessage) -> None:
        if isinstance(message, TaskEvent):
            self.sink(message.event)
            return
        super().say(message)
