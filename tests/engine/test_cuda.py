"""The CUDA path: skipped without a GPU (benchmarks/gpu_check.sh runs it on one).

Besides device selection and the evaluation batch size, the one CUDA-only branch is the training
step of Model A/B, captured in a CUDA graph (tuitrain/train/cuda_step.py): these check that it gives
the eager step's losses, that fit uses it and learns, and that a failed capture falls back cleanly.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from tuitrain.cli import main
from tuitrain.core.events import BatchLosses, LogMessage, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.records import read_record
from tuitrain.train import loop
from tuitrain.train.cuda_step import EagerStep, GraphStep, make_step
from tuitrain.train.data import load_idx_folder
from tuitrain.train.loop import TensorData, fit, make_optimizer, prepare_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


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
    code = main(
        [
            "--preset",
            str(tiny_preset),
            "--no-ui",
            "--device",
            "cuda",
            "--data-dir",
            str(mnist_dir),
            "--runs-dir",
            str(runs),
        ]
    )
    assert code == 0
    files = sorted(runs.glob("*/*.json"))
    assert len(files) == 2
    for path in files:
        record = read_record(path)
        assert record.status == "completed"
        assert record.env.device_type == "cuda"
        assert record.spec.device == "cuda"
        assert all(math.isfinite(v) for v in record.batch_losses)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deterministic():
    """Graph and eager runs pick the same cuDNN kernels anyway; this removes atomics' run-to-run noise."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("model_name,optimizer", [("model_a", "adam"), ("model_b", "adam"), ("model_b", "sgd")])
def test_graph_step_gives_the_eager_steps_losses(deterministic, model_name: str, optimizer: str) -> None:
    device = torch.device("cuda")
    torch.manual_seed(2)
    spec = RunSpec(model=model_name, optimizer=optimizer, lr=0.003 if optimizer == "adam" else 0.02, device="cuda")
    model = prepare_model(spec, device)
    opt = make_optimizer(spec, model.parameters(), capturable=True)
    ref_model, ref_opt = copy.deepcopy((model, opt))  # the same start, before any warm-up
    x, y = torch.randn(300, 1, 28, 28, device=device), torch.randint(0, 10, (300,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    logs: list[str] = []
    graph_step = make_step(model, opt, loss_fn, x, y, 32, graph=True, log=logs.append)
    assert isinstance(graph_step, GraphStep), logs
    eager_step = EagerStep(ref_model, ref_opt, loss_fn, x, y)

    perm = torch.randperm(300, generator=torch.Generator().manual_seed(4)).to(device)
    batches = list(perm.split(32))  # 9 full batches, then one of 12 (eager inside the graph step)
    batches += batches[:3]  # full batches again after the partial one
    got = torch.stack([graph_step(idx) for idx in batches]).tolist()
    want = torch.stack([eager_step(idx) for idx in batches]).tolist()
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def _spy_steps(monkeypatch: pytest.MonkeyPatch) -> list:
    made = []
    real = loop.make_step

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "make_step", spy)
    return made


@pytest.mark.parametrize("model_name", ["model_a", "model_b"])
def test_fit_on_cuda_trains_through_the_graph_like_the_eager_step(
    deterministic, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, model_name: str
) -> None:
    made = _spy_steps(monkeypatch)
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cuda"))
    # 512 = 10 * 48 + 32: every epoch ends with a partial batch
    spec = RunSpec(model=model_name, epochs=3, batch_size=48, lr=0.003, log_every=4, device="cuda", seed=1)
    events = []
    record = fit(spec, events.append, data=data)
    assert record.status == "completed", record.error
    assert isinstance(made[0], GraphStep)
    assert not [e.text for e in events if isinstance(e, LogMessage)]
    assert len(record.batch_losses) == 3 * 11
    assert all(math.isfinite(v) for v in record.batch_losses)
    assert record.epochs[-1].test_accuracy > 90

    monkeypatch.setenv("TUITRAIN_CUDA_GRAPHS", "0")
    eager = fit(spec, data=data)
    assert isinstance(made[1], EagerStep)
    assert record.batch_losses == pytest.approx(eager.batch_losses, rel=1e-3, abs=1e-5)
    assert record.epochs[-1].test_accuracy == pytest.approx(eager.epochs[-1].test_accuracy, abs=1.0)


def test_a_refused_capture_falls_back_to_the_eager_step(
    deterministic, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class RefusingGraph:  # stands in for torch.cuda.graph: fails after the warm-up has trained
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            raise RuntimeError("capture refused for the test")

        def __exit__(self, *args) -> bool:
            return False

    made = _spy_steps(monkeypatch)
    monkeypatch.setattr(torch.cuda, "graph", RefusingGraph)
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cuda"))
    spec = RunSpec(model="model_a", epochs=2, batch_size=48, lr=0.003, log_every=4, device="cuda", seed=1)
    events = []
    record = fit(spec, events.append, data=data)
    assert record.status == "completed", record.error
    assert isinstance(made[0], EagerStep)
    logs = [e.text for e in events if isinstance(e, LogMessage)]
    assert len(logs) == 1 and "CUDA graph capture failed" in logs[0] and "capture refused" in logs[0]

    monkeypatch.setenv("TUITRAIN_CUDA_GRAPHS", "0")
    eager = fit(spec, data=data)
    # the warm-up's training was undone: the same losses as a run that never tried the graph
    assert record.batch_losses == pytest.approx(eager.batch_losses, rel=1e-3, abs=1e-5)


@pytest.mark.subprocess
def test_a_sync_inside_the_capture_falls_back_cleanly() -> None:
    """A real capture failure (an .item() while capturing), in a child process so that whatever it does
    to the CUDA context cannot touch the other tests."""
    code = textwrap.dedent("""
        import copy
        import torch
        from torch import nn
        from tuitrain.train.cuda_step import EagerStep, make_step
        from tuitrain.train.loop import make_optimizer, prepare_model
        from tuitrain.core.spec import RunSpec

        device = torch.device("cuda")
        torch.manual_seed(0)
        spec = RunSpec(model="model_b", lr=0.003, device="cuda")
        model = prepare_model(spec, device)
        opt = make_optimizer(spec, model.parameters(), capturable=True)
        ref_model, ref_opt = copy.deepcopy((model, opt))
        x, y = torch.randn(256, 1, 28, 28, device=device), torch.randint(0, 10, (256,), device=device)

        def syncing_loss(out, target):
            loss = nn.functional.cross_entropy(out, target)
            loss.item()  # a sync: not allowed while capturing
            return loss

        logs = []
        step = make_step(model, opt, syncing_loss, x, y, 32, graph=True, log=logs.append)
        assert isinstance(step, EagerStep), step
        assert len(logs) == 1 and "CUDA graph capture failed" in logs[0], logs
        print("LOG", logs[0])
        ref = EagerStep(ref_model, ref_opt, nn.functional.cross_entropy, x, y)
        for i in range(4):
            idx = torch.arange(32 * i, 32 * i + 32, device=device)
            a, b = step(idx).item(), ref(idx).item()
            assert abs(a - b) <= 1e-4 * abs(b) + 1e-6, (i, a, b)
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
