"""The GPU panel's data source and the GPU figures of run records, on a machine without a GPU (the CUDA side is
in tests/engine/test_cuda.py)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from tuitrain.gpu import GpuReading, GpuSampler, describe, visible_nvml_indices
from tuitrain.records import EpochRecord


def test_no_gpu_no_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    # NVML absent (its import fails) and torch without CUDA: nothing to show, nothing raised
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(
        sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: False))
    )
    sampler = GpuSampler()
    assert sampler.source is None
    assert sampler.read() == []


def test_a_failing_nvml_is_dropped_for_the_torch_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken_init))
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        max_memory_allocated=lambda i: 3 << 30,
        mem_get_info=lambda i: (60 << 30, 80 << 30),
        get_device_name=lambda i: "Some GPU",
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    (reading,) = GpuSampler([0]).read()
    assert reading == GpuReading(0, "Some GPU", None, 20 << 30, 80 << 30, 3 << 30)
    assert describe(reading) == "GPU0 Some GPU · util – · mem 20.0/80.0 GiB · peak 3.00 GiB"


def test_the_sampler_follows_the_gpus_in_use_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        max_memory_allocated=lambda i: (i + 1) << 30,
        mem_get_info=lambda i: (60 << 30, 80 << 30),
        get_device_name=lambda i: f"GPU model {i}",
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    sampler = GpuSampler([0], min_interval_s=3600)
    assert [r.index for r in sampler.read()] == [0]
    sampler.follow([0, 2])  # a second run started on GPU 2: read now, not after the interval
    assert [(r.index, r.name) for r in sampler.read()] == [(0, "GPU model 0"), (2, "GPU model 2")]
    sampler.follow([0, 2])
    assert sampler.read() is sampler.last  # unchanged: the cached readings


def test_visible_devices_map_cuda_indices_to_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_nvml_indices(2) == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert visible_nvml_indices(4) == [3, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert visible_nvml_indices(4) == ["GPU-abc"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_nvml_indices(4) == []


def test_epoch_records_keep_peak_gpu_memory_and_older_files_lack_it() -> None:
    fields = dict(
        epoch=1,
        initial_loss=2.3,
        final_loss=0.1,
        mean_loss=0.5,
        test_loss=0.1,
        test_accuracy=97.0,
        test_correct=97,
        test_total=100,
        duration_s=1.0,
        samples_per_s=100.0,
    )
    old = EpochRecord.model_validate(fields)
    assert old.peak_gpu_memory_bytes is None
    new = EpochRecord.model_validate_json(json.dumps({**fields, "peak_gpu_memory_bytes": 123_456_789}))
    assert new.peak_gpu_memory_bytes == 123_456_789
    with pytest.raises(ValueError):
        EpochRecord.model_validate({**fields, "peak_gpu_memory_bytes": -1})


def test_a_cpu_run_records_no_gpu_memory_and_bf16_falls_back_to_fp32(mnist_dir) -> None:
    from tuitrain.core.events import LogMessage
    from tuitrain.core.spec import RunSpec
    from tuitrain.train.data import load_idx_folder
    from tuitrain.train.loop import fit

    events: list = []
    spec = RunSpec(model="model_a", epochs=1, batch_size=64, device="cpu", precision="bf16")
    record = fit(spec, events.append, data=load_idx_folder(mnist_dir))
    assert record.status == "completed", record.error
    assert record.spec.precision == "fp32"  # what was used, not what was asked
    assert [e.text for e in events if isinstance(e, LogMessage)] == [
        "bf16 needs a CUDA GPU that supports it; training in fp32."
    ]
    assert record.epochs[0].peak_gpu_memory_bytes is None


def test_compare_shows_peak_gpu_memory_only_for_gpu_runs(tmp_path) -> None:
    from tests.compare_fixtures import normal_pair, write_runs
    from tuitrain.compare import Comparison

    cpu_pair = normal_pair()
    rows = Comparison.from_paths(write_runs(tmp_path / "cpu", cpu_pair)).table_rows()
    assert not [r for r in rows if r[0] == "Peak GPU memory"]

    gpu_pair = normal_pair()
    for record, peak in zip(gpu_pair, (3 * 1024**3, 1024**3 // 2)):
        record.env.device, record.env.device_type = "NVIDIA H200", "cuda"
        for i, epoch in enumerate(record.epochs):
            epoch.peak_gpu_memory_bytes = peak - i  # the run's peak is its highest epoch
    comparison = Comparison.from_paths(write_runs(tmp_path / "gpu", gpu_pair), baseline=1)
    (row,) = [r for r in comparison.table_rows() if r[0] == "Peak GPU memory"]
    assert row[1:] == ["3.00 GiB", "0.50 GiB (-2.50)"]
