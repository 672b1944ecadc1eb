"""The CUDA path: skipped without a GPU (benchmarks/gpu_check.sh runs it on one).

The loop has no CUDA-only branches besides device selection and the evaluation batch size, so
the CPU tests in test_engine.py and test_perf.py exercise the same code; these check that it
really trains on the GPU and that the CLI records it as such.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tuitrain.cli import main
from tuitrain.records import read_record
from tuitrain.train.data import load_idx_folder
from tuitrain.train.events import BatchLosses, RunStarted
from tuitrain.train.loop import TensorData, fit
from tuitrain.train.spec import RunSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_fit_on_cuda_keeps_data_on_the_gpu(mnist_dir: Path) -> None:
    device = torch.device("cuda")
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), device)
    assert all(t.is_cuda for t in (data.train_x, data.train_y, data.test_x, data.test_y))
    events = []
    spec = RunSpec(model="model_b", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cuda", seed=1)
    record = fit(spec, events.append, data=data)
    assert record.status == "completed", record.error
    assert record.env.device_type == "cuda"
    assert events[0].device == torch.cuda.get_device_name(device) and isinstance(events[0], RunStarted)
    assert len(record.batch_losses) == 2 * (512 // 32)
    assert all(math.isfinite(v) for v in record.batch_losses)
    assert [v for e in events if isinstance(e, BatchLosses) for v in e.losses] == record.batch_losses
    assert record.epochs[-1].test_total == 128
    assert record.epochs[-1].test_accuracy > 60


def test_cli_headless_on_cuda_writes_a_completed_record(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    # the preset says device = "cpu"; the command line's --device wins
    runs = tmp_path / "runs"
    code = main(["--preset", str(tiny_preset), "--no-ui", "--device", "cuda", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)])
    assert code == 0
    files = sorted(runs.glob("*/*.json"))
    assert len(files) == 2
    for path in files:
        record = read_record(path)
        assert record.status == "completed"
        assert record.env.device_type == "cuda"
        assert record.spec.device == "cuda"
        assert all(math.isfinite(v) for v in record.batch_losses)
