"""Workers on threads of the invoking process: runs side by side in one process, each on its own CUDA stream.

On one GPU, runs that cannot fuse (ResNet18 beside AlexNet) each leave the device partly idle, and worker processes
time-slice it (a context each) rather than run at once: one process whose runs launch their work on streams of
their own overlaps them (torch releases the GIL in its kernels and graph replays). `--jobs auto` plans this on one
GPU (session.plan_side_by_side); the CPU keeps worker processes (two runs on threads of one process measured no
faster there: see benchmarks/parallel_sweeps.py).

A ThreadWorker is the scheduler's Worker as a worker process is (executors.local): it trains the runs it is sent
one at a time with `train_task`, each with its own RunControl that the scheduler's ControlState messages set, and
sends its messages back through a queue (the scheduler's thread calls the front end's sink, one caller at a time).
Unlike a process it writes the run files and checkpoints itself, as the worker of a lone run does
(executors.inprocess). What the runs of one process share is handled so that each trains as it would alone:
- the data: one copy on the device for all of them (train.side_by_side.SharedTensors), complete before any run
  reads it;
- torch's global seed: each run seeds and builds its model under train.loop.SEEDING_LOCK;
- the GPU: each worker's runs go to a CUDA stream of its own (train.side_by_side.OwnStreams);
- dropout: each CUDA run captures its step with a generator of its own (cuda_step.own_dropout_rng), one capture at
  a time (cuda_step.CAPTURE_LOCK);
- torch.set_num_threads and cudnn.benchmark are process-wide: the runs on a GPU all want cuDNN's autotuner (set
  before each run's fit, which then leaves it on) and hardly use CPU threads.
A thread cannot be killed: closed at once (a second stop signal), its run is stopped and saves itself as interrupted
while the worker waits a while for it. GPU memory statistics (a record's peak memory) are the device's, so they
count every run on it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading

from tuitrain.core.control import RunControl
from tuitrain.core.tasks import ControlState, RunTask, WorkerMessage, WorkerReady
from tuitrain.executors.scheduler import STOP_WAIT_S
from tuitrain.train.data import MnistArrays
from tuitrain.train.side_by_side import OwnStreams, SharedTensors
from tuitrain.train.worker import apply_control, train_task

THREAD_NAME = "tuitrain-side-by-side"
"""The threads that train the runs (one per worker)."""


class ThreadWorker:
    """The scheduler's Worker on a thread of this process (see the module's docstring). Its messages wait in a queue,
    with a byte on a socket pair to wake the scheduler (which waits on the socket)."""

    def __init__(self, tensors: SharedTensors) -> None:
        self.tensors = tensors
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_read.setblocking(False)
        self.wake_write.setblocking(False)
        self.outbox: queue.Queue[WorkerMessage] = queue.Queue()
        self.inbox: queue.Queue[tuple[RunTask, RunControl] | None] = queue.Queue()
        self.controls: dict[int, RunControl] = {}
        """The controls of the run this worker was sent, by index (set by the scheduler's ControlState)."""
        self.arrays: MnistArrays | None = None
        self.data_given = threading.Event()
        self.reason: str | None = None
        self.closed = False
        self.streams = OwnStreams()
        self.thread = threading.Thread(target=self.work, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def work(self) -> None:
        try:
            self.say(WorkerReady(os.getpid(), socket.gethostname()))
            self.data_given.wait()
            while (item := self.inbox.get()) is not None:
                assert self.arrays is not None
                task, control = item
                try:
                    with self.streams.training(task):
                        # not learnt from (estimate.learn_from_run): beside other runs, a run is slower than alone
                        train_task(
                            task, self.arrays, self.say, control, self.tensors, write_files=True, learn_times=False
                        )
                finally:
                    self.controls.pop(task.index, None)
        except BaseException as exc:  # noqa: BLE001 - the scheduler saves the run as crashed, with this reason
            self.reason = f"the training thread failed: {type(exc).__name__}: {exc}"
        finally:
            self.reason = self.reason or "the training thread ended"
            self.wake()

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
        elif isinstance(message, RunTask):
            control = self.controls[message.index] = RunControl()  # before any ControlState for it can arrive
            self.inbox.put((message, control))
        elif isinstance(message, ControlState):
            if message.index in self.controls:
                apply_control(self.controls[message.index], message)
        elif message is None:
            self.inbox.put(None)

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
            for control in list(self.controls.values()):
                control.stop_all.set()
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
