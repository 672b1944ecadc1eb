"""The run screen's GPU panel: one line per GPU that a live run on this machine trains on (name, utilisation,
memory used/total, this process's peak allocation), refreshed once a second from tuitrain.gpu. Hidden until a
run starts on a GPU, and for good when there is nothing to read (a CPU-only machine, or neither NVML nor CUDA
figures available). Runs on other machines (a Ray cluster's nodes) are not read: this machine's GPUs are not
theirs."""

from __future__ import annotations

import socket

from textual.timer import Timer
from textual.widgets import Static

from tuitrain.core.events import RunStarted
from tuitrain.gpu import GpuSampler, describe

REFRESH_S = 1.0


class GpuPanel(Static):
    """Told of each run that starts and ends (`run_started`, `run_ended`); reads the GPUs of the live ones, never
    on CPU runs. When the last live run ends, its GPUs' last readings stay shown."""

    def __init__(self, sampler: GpuSampler | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sampler = sampler
        self.timer: Timer | None = None
        self.live: dict[str, int] = {}
        """The GPU of each live run on a GPU of this machine, by run id."""

    def run_started(self, event: RunStarted) -> None:
        """Read the run's GPU while it trains, if it trains on one of this machine's."""
        if event.device.startswith("CPU") or (event.host is not None and event.host != socket.gethostname()):
            return
        self.live[event.run_id] = event.gpu if event.gpu is not None else 0  # unknown (watched): the first GPU
        self.follow()

    def run_ended(self, run_id: str) -> None:
        if self.live.pop(run_id, None) is not None and self.live:
            self.follow()

    def follow(self) -> None:
        gpus = sorted(set(self.live.values()))
        if self.sampler is None:
            self.sampler = GpuSampler(gpus, min_interval_s=REFRESH_S)
        else:
            self.sampler.follow(gpus)
        self.sample()
        if self.timer is None:
            self.timer = self.set_interval(REFRESH_S, self.sample)

    def sample(self) -> None:
        readings = self.sampler.read() if self.sampler is not None else []
        if not readings:
            self.display = False
            return
        self.update("\n".join(describe(r) for r in readings))
        self.display = True

    def stop(self) -> None:
        """No more readings (training ended): the last ones stay shown."""
        if self.timer is not None:
            self.timer.stop()
