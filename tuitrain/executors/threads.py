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

from typing import Any

from tuitrain.core.control import RunControl
from tuitrain.core.tasks import ControlState, RunTask
from tuitrain.executors.inprocess import ThreadedWorker
from tuitrain.train.data import MnistArrays
from tuitrain.train.side_by_side import OwnStreams, SharedTensors
from tuitrain.train.worker import apply_control, train_task

THREAD_NAME = "tuitrain-side-by-side"
"""The threads that train the runs (one per worker)."""


class ThreadWorker(ThreadedWorker):
    """The scheduler's Worker on a thread of this process, one of several side by side (see the module's docstring):
    each run with a RunControl of its own that the scheduler's ControlState messages set, its work on the worker's
    own CUDA stream."""

    thread_name = THREAD_NAME

    def __init__(self, tensors: SharedTensors) -> None:
        self.tensors = tensors
        self.controls: dict[int, RunControl] = {}
        """The controls of the run this worker was sent, by index (set by the scheduler's ControlState)."""
        self.streams = OwnStreams()
        super().__init__()

    def take(self, message: object) -> None:
        if isinstance(message, RunTask):
            control = self.controls[message.index] = RunControl()  # before any ControlState for it can arrive
            self.inbox.put((message, control))
        elif isinstance(message, ControlState) and message.index in self.controls:
            apply_control(self.controls[message.index], message)

    def train(self, item: Any, arrays: MnistArrays) -> None:
        task, control = item
        try:
            with self.streams.training(task):
                # not learnt from (estimate.learn_from_run): beside other runs, a run is slower than alone
                train_task(task, arrays, self.say, control, self.tensors, write_files=True, learn_times=False)
        finally:
            self.controls.pop(task.index, None)

    def stop_runs(self) -> None:
        for control in list(self.controls.values()):
            control.stop_all.set()
