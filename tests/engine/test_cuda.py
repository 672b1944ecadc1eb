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
from tuitrain.train.device import TensorData, prepare_model
from tuitrain.train.loop import fit
from tuitrain.train.optim import make_optimizer

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
        from tuitrain.train.optim import make_optimizer
        from tuitrain.train.device import prepare_model
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


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _graph_and_eager(model_name: str, precision: str = "fp32", dropout: bool = False, lr: float = 0.001):
    device = torch.device("cuda")
    torch.manual_seed(2)
    spec = RunSpec(model=model_name, lr=lr, device="cuda")
    model = prepare_model(spec, device).train()
    if not dropout:
        _no_dropout(model)
    opt = make_optimizer(spec, model.parameters(), capturable=True)
    ref_model, ref_opt = copy.deepcopy((model, opt))
    x, y = torch.randn(300, 1, 28, 28, device=device), torch.randint(0, 10, (300,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    logs: list[str] = []
    graph_step = make_step(model, opt, loss_fn, x, y, 32, graph=True, precision=precision, log=logs.append)
    assert isinstance(graph_step, GraphStep), logs
    eager_step = EagerStep(ref_model, ref_opt, loss_fn, x, y, precision=precision)
    return model, ref_model, graph_step, eager_step


@pytest.mark.parametrize("model_name", ["resnet18", "alexnet"])
def test_graph_step_of_the_large_models_gives_the_eager_steps_losses(deterministic, model_name: str) -> None:
    """Batch norm's running statistics are updated inside the graph and the warm-up's updates undone: the same
    losses, weights and running statistics as the eager step (dropout off here: its masks differ by design)."""
    model, ref_model, graph_step, eager_step = _graph_and_eager(model_name)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(4)).to("cuda")
    batches = list(perm.split(32))
    batches += batches[:3]
    got = torch.stack([graph_step(idx) for idx in batches]).tolist()
    want = torch.stack([eager_step(idx) for idx in batches]).tolist()
    assert got == pytest.approx(want, rel=1e-3, abs=1e-5)
    for a, b in zip(model.buffers(), ref_model.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-4)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_dropout_inside_the_graph_draws_fresh_masks_like_the_eager_step(deterministic) -> None:
    """AlexNet with its dropout, at a learning rate too small to move the weights: the loss on one batch varies
    from replay to replay only through dropout's masks, as much as it does in the eager step."""
    _, _, graph_step, eager_step = _graph_and_eager("alexnet", dropout=True, lr=1e-9)
    idx = torch.arange(32, device="cuda")
    got = torch.stack([graph_step(idx) for _ in range(40)])
    want = torch.stack([eager_step(idx) for _ in range(40)])
    assert len(set(got.tolist())) > 30  # fresh masks at every replay, not one mask baked into the graph
    assert got.mean().item() == pytest.approx(want.mean().item(), rel=0.02)
    assert got.std().item() == pytest.approx(want.std().item(), rel=0.6)


@pytest.mark.skipif(not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(), reason="no bf16 GPU")
@pytest.mark.parametrize("model_name", ["model_b", "resnet18", "alexnet"])
def test_bf16_graph_step_follows_the_bf16_eager_step(deterministic, model_name: str) -> None:
    _, _, graph_step, eager_step = _graph_and_eager(model_name, precision="bf16")
    batches = list(torch.randperm(300, generator=torch.Generator().manual_seed(4)).to("cuda").split(32))
    got = torch.stack([graph_step(idx) for idx in batches]).tolist()
    want = torch.stack([eager_step(idx) for idx in batches]).tolist()
    assert got == pytest.approx(want, rel=3e-2, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(), reason="no bf16 GPU")
def test_fit_in_bf16_learns_and_records_precision_and_peak_memory(mnist_dir: Path) -> None:
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cuda"))
    spec = RunSpec(model="resnet18", epochs=2, batch_size=32, log_every=4, device="cuda", seed=1, precision="bf16")
    events = []
    record = fit(spec, events.append, data=data)
    assert record.status == "completed", record.error
    assert record.spec.precision == "bf16"
    assert not [e.text for e in events if isinstance(e, LogMessage)]
    assert all(e.peak_gpu_memory_bytes and e.peak_gpu_memory_bytes > 1_000_000 for e in record.epochs)
    assert record.epochs[-1].test_accuracy > 60


def test_gpu_sampler_reads_the_gpu_in_use() -> None:
    from tuitrain.gpu import GpuSampler, describe

    torch.zeros(1 << 20, device="cuda")  # CUDA initialised, something allocated
    for nvml in (True, False):
        sampler = GpuSampler([0], nvml=nvml)
        readings = sampler.read()
        assert len(readings) == 1, nvml
        r = readings[0]
        assert r.name == torch.cuda.get_device_name(0)
        assert 0 < r.memory_used <= r.memory_total
        assert r.memory_total == pytest.approx(torch.cuda.mem_get_info(0)[1], rel=0.05)
        assert r.peak_allocated is not None and r.peak_allocated >= torch.cuda.memory_allocated(0)
        if nvml:
            assert sampler.source is not None, "nvidia-ml-py installed on the GPU machine: NVML must answer"
            assert r.utilization_pct is not None and 0 <= r.utilization_pct <= 100
        else:
            assert r.utilization_pct is None
        assert sampler.read() is readings  # cached: at most one query per second
        assert r.name in describe(r)


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adam"},
        {"optimizer": "adamw", "weight_decay": 0.05},
        {"optimizer": "sgd", "nesterov": True, "weight_decay": 1e-3},
    ],
)
def test_graph_step_follows_an_lr_schedule_without_capturing_again(deterministic, settings: dict) -> None:
    """The captured step reads the lr from a device tensor: set_lr between 'epochs' changes the replayed updates as
    it changes the eager step's, and the training-accuracy counter counts as the eager one does."""
    from tuitrain.train.optim import set_lr

    device = torch.device("cuda")
    torch.manual_seed(2)
    spec = RunSpec(model="model_b", lr=0.01, device="cuda", **settings)
    model = _no_dropout(prepare_model(spec, device).train())
    opt = make_optimizer(spec, model.parameters(), capturable=True)
    set_lr(opt, 0.01, on_device=True)
    ref_model, ref_opt = copy.deepcopy((model, opt))
    set_lr(ref_opt, 0.01, on_device=False)
    x, y = torch.randn(300, 1, 28, 28, device=device), torch.randint(0, 10, (300,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    correct, ref_correct = (torch.zeros((), dtype=torch.long, device=device) for _ in range(2))
    logs: list[str] = []
    graph_step = make_step(model, opt, loss_fn, x, y, 32, graph=True, log=logs.append, correct=correct)
    assert isinstance(graph_step, GraphStep), logs
    eager_step = EagerStep(ref_model, ref_opt, loss_fn, x, y, correct=ref_correct)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(4)).to(device)
    got, want = [], []
    for lr in (0.01, 0.002, 0.0):  # 0: a replay that still changes the weights would show
        set_lr(opt, lr, on_device=True)
        set_lr(ref_opt, lr, on_device=False)
        got += [graph_step(idx) for idx in perm.split(32)]
        want += [eager_step(idx) for idx in perm.split(32)]
    assert torch.stack(got).tolist() == pytest.approx(torch.stack(want).tolist(), rel=1e-3, abs=1e-5)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    assert int(correct) == int(ref_correct) > 0


def test_counting_the_confusion_matrix_on_cuda_never_syncs() -> None:
    """Each batch's counts are queued on the GPU (bincount would read its input's maximum back); only read_back
    syncs, once, and the matrix is the recount of the predictions."""
    from tuitrain.train.evaluation import EvalCounts

    torch.manual_seed(0)
    device = torch.device("cuda")
    logits = [torch.randn(3, 500, 10, device=device) for _ in range(4)]  # three stacked runs, four batches
    targets = [torch.randint(0, 10, (500,), device=device) for _ in range(4)]
    counts = EvalCounts(3, device)
    torch.cuda.set_sync_debug_mode("error")  # any sync in the batch loop raises
    try:
        for out, target in zip(logits, targets, strict=True):
            counts.add(out, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    results = counts.read_back(2000)
    predicted, target = torch.cat([o.argmax(-1) for o in logits], 1).cpu(), torch.cat(targets).cpu()
    for run, result in enumerate(results):
        expected = [[int(((target == t) & (predicted[run] == p)).sum()) for p in range(10)] for t in range(10)]
        assert result.confusion == expected and result.total == 2000
