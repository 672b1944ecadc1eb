"""What the GPUs in use are doing, for the run screen's GPU panel: name, utilisation, memory, peak allocation.

Read from NVML (`nvidia-ml-py`, imported as `pynvml`, the `gpu` extra) and, where NVML is missing or fails,
from torch.cuda's memory figures, but only when this process already has torch imported with CUDA initialised
(this module never imports torch: watching another process's run stays torch-free). On a machine without a
GPU, or with neither source, `GpuSampler.read()` returns nothing and the panel stays hidden. Nothing here
raises: a failing source is dropped and the next one tried. Readings are cached for `min_interval_s`, so
however often the screen asks, NVML is queried at most once a second.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment."""

    index: int
    """The CUDA device index as this process numbers it (after CUDA_VISIBLE_DEVICES)."""
    name: str
    utilization_pct: int | None
    """Percent of the last sample period in which a kernel ran (NVML); None without NVML."""
    memory_used: int
    """Bytes in use on the device, by every process (NVML), or as the CUDA driver reports it (fallback)."""
    memory_total: int
    peak_allocated: int | None
    """Peak bytes allocated by this process's torch allocator since the sampler started; None when training runs
    in another process."""


def visible_nvml_indices(count: int) -> list[int | str]:
    """NVML's handles for the CUDA devices this process sees, in CUDA order: CUDA_VISIBLE_DEVICES as indices or
    UUIDs, else 0..count-1."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return list(range(count))
    out: list[int | str] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            break
        out.append(int(part) if part.isdigit() else part)
    return out


class NvmlSource:
    """NVML, initialised once; raises on construction when it is not there (no library, no driver, no GPU)."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml: Any = pynvml
        self.handles: dict[int, Any] = {}
        visible = visible_nvml_indices(pynvml.nvmlDeviceGetCount())
        for cuda_index, key in enumerate(visible):
            if isinstance(key, int):
                self.handles[cuda_index] = pynvml.nvmlDeviceGetHandleByIndex(key)
            else:
                self.handles[cuda_index] = pynvml.nvmlDeviceGetHandleByUUID(key)
        if not self.handles:
            raise RuntimeError("NVML sees no GPU")

    def read(self, index: int) -> tuple[str, int | None, int, int]:
        nvml, handle = self.nvml, self.handles[index]
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        return name, int(util), int(mem.used), int(mem.total)


def torch_cuda() -> Any | None:
    """torch.cuda when this process has imported torch and initialised CUDA (never imports or initialises it)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:  # noqa: BLE001 - a half-imported torch: no figures
        return None


class GpuSampler:
    """Readings of the GPUs in use (`indices`: CUDA device indices; None: device 0), at most once per
    `min_interval_s`. `nvml=False` skips NVML (the fallback, and tests)."""

    def __init__(self, indices: Sequence[int] | None = None, min_interval_s: float = 1.0, nvml: bool = True) -> None:
        self.indices = list(indices) if indices is not None else [0]
        self.min_interval_s = min_interval_s
        self.source: NvmlSource | None = None
        if nvml:
            try:
                self.source = NvmlSource()
            except Exception:  # noqa: BLE001 - no NVML here: the torch fallback, or nothing
                self.source = None
        self.peaks: dict[int, int] = {}
        self.last: list[GpuReading] = []
        self.last_at: float | None = None

    def follow(self, indices: Sequence[int]) -> None:
        """Read these GPUs from now on (the next read is fresh when they changed)."""
        if list(indices) != self.indices:
            self.indices, self.last_at = list(indices), None

    def read(self) -> list[GpuReading]:
        now = time.monotonic()
        if self.last_at is not None and now - self.last_at < self.min_interval_s:
            return self.last
        self.last_at = now
        self.last = [r for r in (self.read_one(i) for i in self.indices) if r is not None]
        return self.last

    def read_one(self, index: int) -> GpuReading | None:
        cuda = torch_cuda()
        peak = None
        if cuda is not None:
            try:  # the allocator's host-side counters: no sync with the device
                peak = max(self.peaks.get(index, 0), int(cuda.max_memory_allocated(index)))
                self.peaks[index] = peak
            except Exception:  # noqa: BLE001
                peak = None
        if self.source is not None and index in self.source.handles:
            try:
                name, util, used, total = self.source.read(index)
                return GpuReading(index, name, util, used, total, peak)
            except Exception:  # noqa: BLE001 - NVML failed now: try torch's figures
                pass
        if cuda is None:
            return None
        try:
            free, total = cuda.mem_get_info(index)
            return GpuReading(index, str(cuda.get_device_name(index)), None, int(total - free), int(total), peak)
        except Exception:  # noqa: BLE001
            return None


def describe(reading: GpuReading) -> str:
    """One line for the panel: 'GPU0 NVIDIA H100 · util 97% · mem 3.1/79.6 GiB · peak 1.2 GiB'."""
    gib = 1024**3
    util = f"{reading.utilization_pct}%" if reading.utilization_pct is not None else "–"
    parts = [
        f"GPU{reading.index} {reading.name}",
        f"util {util}",
        f"mem {reading.memory_used / gib:.1f}/{reading.memory_total / gib:.1f} GiB",
    ]
    if reading.peak_allocated is not None:
        parts.append(f"peak {reading.peak_allocated / gib:.2f} GiB")
    return " · ".join(parts)
