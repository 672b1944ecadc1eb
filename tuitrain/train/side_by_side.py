"""What runs side by side in one process (tuitrain.executors.threads) need of torch: one copy of the data on the device
for all of them, and each run's work on a CUDA stream of its own worker, its captured step drawing dropout from a
generator of its own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from tuitrain.core.tasks import RunTask
from tuitrain.train.cuda_step import own_dropout_rng
from tuitrain.train.data import MnistArrays
from tuitrain.train.device import TensorData, select_device
from tuitrain.train.worker import TensorCache


class SharedTensors(TensorCache):
    """The data on the device for every worker of the process: one copy per subset and device, made by the first run
    that needs it and finished on the device before any run (on another stream) reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.copies: dict[tuple, TensorData] = {}

    def get(self, arrays: MnistArrays, device: torch.device, task: RunTask) -> TensorData:
        spec = task.spec
        gpu = torch.cuda.current_device() if device.type == "cuda" else None
        key = (str(device), gpu, spec.subset, spec.test_subset, spec.dataset)
        with self.lock:
            if key not in self.copies:
                data = TensorData.from_arrays(arrays, device, spec.subset, spec.test_subset, spec.dataset)
                if device.type == "cuda":
                    torch.cuda.current_stream().synchronize()  # made on this run's stream, read on the others'
                self.copies[key] = data
            return self.copies[key]


class OwnStreams:
    """A worker thread's CUDA streams, one per GPU it trains on."""

    def __init__(self) -> None:
        self.streams: dict[int, torch.cuda.Stream] = {}

    @contextlib.contextmanager
    def training(self, task: RunTask) -> Iterator[None]:
        """On a GPU: the task's work goes to this worker's stream there, and its captured step draws dropout from a
        generator of its own, seeded from the run's seed. On the CPU, or a device that cannot be used (train_task
        says so), nothing changes."""
        try:
            device = select_device(task.spec.device)
        except Exception:  # noqa: BLE001 - train_task refuses the task with the reason
            device = torch.device("cpu")
        if device.type != "cuda":
            yield
            return
        visible = task.gpu is not None and task.gpu < torch.cuda.device_count()
        gpu = task.gpu if visible and task.gpu is not None else torch.cuda.current_device()
        if not torch.backends.cudnn.deterministic:  # as fit sets it, before any run's fit notes what to restore
            torch.backends.cudnn.benchmark = True
        with torch.cuda.device(gpu):
            stream = self.streams.get(gpu)
            if stream is None:
                stream = self.streams[gpu] = torch.cuda.Stream(gpu)
            generator = torch.Generator(device=f"cuda:{gpu}").manual_seed(task.spec.seed)
            with torch.cuda.stream(stream), own_dropout_rng(generator):
                try:
                    yield
                finally:
                    stream.synchronize()  # the run's last work is done before the stream takes the next run
