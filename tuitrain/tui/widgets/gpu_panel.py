"""The run screen's GPU panel: one line per GPU in use (name, utilisation, memory used/total, this process's
peak allocation), refreshed once a second from tuitrain.gpu. Hidden until a run starts on a GPU, and for good
when there is nothing to read (a CPU-only machine, or neither NVML nor CUDA figures available)."""

from __future__ import annotations

from textual.timer import Timer
from textual.widgets import Static

from tuitrain.gpu import GpuSampler, describe

REFRESH_S = 1.0


class GpuPanel(Static):
    """Starts reading when `watch_device` is told a run trains on a GPU; never reads on a CPU run."""

    def __init__(self, sampler: GpuSampler | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sampler = sampler
        self.timer: Timer | None = None

    def watch_device(self, device: str) -> None:
        """A run started on `device` (the progress line's device name): start sampling if it is a GPU."""
        if device.startswith("CPU") or self.timer is not None:
            return
        if self.sampler is None:
            self.sampler = GpuSampler([0], min_interval_s=REFRESH_S)
        self.sample()
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
