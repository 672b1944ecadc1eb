"""Runs side by side in one process (executors.threads): two different models train at once on threads, each with
the losses it has alone, its own controls (one paused, one stopped midway), its own record, run file, checkpoint and
events, written by this process. --jobs auto plans it on one GPU only, so these CPU tests ask for it themselves
(`side_by_side`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tuitrain import session
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, EpochEnded, Event, LogMessage, RunFinished, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.records import read_record
from tuitrain.session import PresetInvocation, plan_jobs, plan_side_by_side
from tuitrain.train import estimate
from tuitrain.train.checkpoint import checkpoint_path, load_checkpoint
from tuitrain.train.cuda_step import capture_step, own_dropout_rng
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData, prepare_model
from tuitrain.train.optim import make_optimizer
from tuitrain.train.side_by_side import SharedTensors

pytestmark = [pytest.mark.slow]


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same thread count side by side and alone, so that the losses can be compared exactly."""
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")


def two_models(tmp_path: Path, epochs_a: int, epochs_b: int) -> Path:
    path = tmp_path / f"two-{epochs_a}-{epochs_b}.toml"
    path.write_text(
        f"""
name = "two"
title = "Two different models"
[defaults]
batch_size = 32
lr = 0.003
log_every = 4
device = "cpu"

[[runs]]
label = "A"
model = "model_a"
epochs = {epochs_a}

[[runs]]
label = "B"
model = "model_b"
epochs = {epochs_b}
""",
        encoding="utf-8",
    )
    return path


def prepare(preset: Path, runs: Path, data: Path, jobs: int, side_by_side: bool | None) -> PresetInvocation:
    inv = PresetInvocation.prepare(load_preset_file(preset), runs_dir=runs, data_dir=data, jobs=jobs)
    inv.side_by_side = side_by_side
    return inv


def kinds(events: list[Event], run_id: str) -> list[tuple]:
    """A run's start, epoch ends and end, as the front end sees them."""
    out: list[tuple] = []
    for e in events:
        if isinstance(e, RunStarted) and e.run_id == run_id:
            out.append(("started", e.run_index, e.run_count, e.batches_per_epoch, e.start_epoch))
        elif isinstance(e, EpochEnded) and e.run_id == run_id:
            out.append(("epoch", e.epoch, e.test_correct))
        elif isinstance(e, RunFinished) and e.run_id == run_id:
            out.append(("finished", e.status))
    return out


def test_two_models_side_by_side_train_as_each_alone(
    tmp_path: Path, mnist_dir: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = two_models(tmp_path, 3, 2)
    alone_events: list[Event] = []
    alone = prepare(preset, tmp_path / "alone", mnist_dir, jobs=1, side_by_side=None)
    alone_records = alone.run(alone_events.append)

    shared: list[SharedTensors] = []

    def spied_tensors() -> SharedTensors:
        shared.append(SharedTensors())
        return shared[-1]

    monkeypatch.setattr(session, "SharedTensors", spied_tensors)
    learnt: list = []  # a run beside others is slower than alone: not what an estimate should learn
    monkeypatch.setattr(estimate, "learn_from_run", learnt.append)
    events: list[Event] = []
    inv = prepare(preset, tmp_path / "side", mnist_dir, jobs=2, side_by_side=True)

    def sink(event: Event) -> None:
        events.append(event)
        # A waits after its first losses until B has ended: B trains while A is mid-run
        if isinstance(event, BatchLosses) and event.run_id == inv.run_id(0) and event.epoch == 1 and event.batch == 4:
            inv.run_controls[event.run_id].paused.set()
        if isinstance(event, RunFinished) and event.run_id == inv.run_id(1):
            inv.run_controls[inv.run_id(0)].paused.clear()

    records = inv.run(sink, RunControl())
    assert [r.status for r in records] == ["completed", "completed"]
    finished = [e.run_index for e in events if isinstance(e, RunFinished)]
    assert finished == [1, 0]
    assert any(
        isinstance(e, LogMessage)
        and e.text == "Training 2 run(s), up to 2 at a time side by side in this process, a thread each"
        for e in events
    )
    assert len(shared) == 1 and len(shared[0].copies) == 1  # one copy of the data for both runs
    assert learnt == []
    for index, (one, other) in enumerate(zip(alone_records, records, strict=True)):
        assert other.batch_losses == one.batch_losses
        assert [e.test_correct for e in other.epochs] == [e.test_correct for e in one.epochs]
        assert other.env.pid == os.getpid()  # trained in this process
        assert kinds(events, other.id) == kinds(alone_events, one.id)
        streamed = [v for e in events if isinstance(e, BatchLosses) and e.run_id == other.id for v in e.losses]
        assert streamed == other.batch_losses
        assert inv.folder is not None
        path = inv.folder / inv.files[index]
        saved = read_record(path)
        assert saved.status == "completed" and saved.batch_losses == other.batch_losses
        assert saved.checkpoint == path.with_name(path.stem + ".ckpt.pt").name
        assert load_checkpoint(checkpoint_path(path), other.id)["epoch"] == len(one.epochs)
    assert records[0].epochs[0].paused_s > 0


def test_a_run_stopped_midway_beside_a_paused_one(tmp_path: Path, mnist_dir: Path, one_thread: None) -> None:
    preset = two_models(tmp_path, 4, 30)
    # B alone as far as it gets before its stop
    alone = prepare(two_models(tmp_path, 4, 2), tmp_path / "alone", mnist_dir, jobs=1, side_by_side=None)
    alone_records = alone.run(lambda _e: None)

    events: list[Event] = []
    inv = prepare(preset, tmp_path / "side", mnist_dir, jobs=2, side_by_side=True)

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, BatchLosses) and event.run_id == inv.run_id(0) and event.epoch == 1 and event.batch == 4:
            inv.run_controls[event.run_id].paused.set()
        if isinstance(event, EpochEnded) and event.run_id == inv.run_id(1) and event.epoch == 2:
            inv.run_controls[event.run_id].stop_run.set()  # B alone: A keeps training once it goes on
        if isinstance(event, RunFinished) and event.run_id == inv.run_id(1):
            inv.run_controls[inv.run_id(0)].paused.clear()

    records = inv.run(sink, RunControl())
    a, b = records
    assert (a.status, b.status) == ("completed", "interrupted")
    assert a.batch_losses == alone_records[0].batch_losses
    assert 2 <= len(b.epochs) < 30
    # B as far as it got: the losses it has alone, its file and checkpoint saying so
    assert b.batch_losses[: len(alone_records[1].batch_losses)] == alone_records[1].batch_losses
    assert inv.folder is not None
    saved = read_record(inv.folder / inv.files[1])
    assert saved.status == "interrupted" and saved.batch_losses == b.batch_losses
    assert load_checkpoint(checkpoint_path(inv.folder / inv.files[1]), b.id)["epoch"] == len(b.epochs)
    assert [e.status for e in events if isinstance(e, RunFinished)] == ["interrupted", "completed"]


def test_the_invocations_stop_ends_every_run_side_by_side(tmp_path: Path, mnist_dir: Path, one_thread: None) -> None:
    preset = two_models(tmp_path, 40, 40)
    control = RunControl()
    inv = prepare(preset, tmp_path / "side", mnist_dir, jobs=2, side_by_side=True)
    started: set[str] = set()

    def sink(event: Event) -> None:
        if isinstance(event, BatchLosses):
            started.add(event.run_id)
            if len(started) == 2:
                control.stop_all.set()

    records = inv.run(sink, control)
    assert [r.status for r in records] == ["interrupted", "interrupted"]
    assert all(len(r.epochs) < 40 and r.batch_losses for r in records)
    assert inv.folder is not None
    assert [read_record(inv.folder / f).status for f in inv.files] == ["interrupted", "interrupted"]


def cuda_spec(model: str, device: str = "cuda") -> RunSpec:
    return RunSpec(model=model, device=device)


def test_auto_plans_side_by_side_on_one_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "select_device", lambda name: torch.device("cuda" if name == "cuda" else "cpu"))
    pair = [cuda_spec("resnet18"), cuda_spec("alexnet")]
    assert plan_side_by_side("auto", pair, [0])
    assert plan_jobs("auto", pair, [0]) == 2  # ResNet18 beside AlexNet on one GPU
    assert plan_jobs("auto", pair, [0, 1]) == 2  # a GPU each
    assert not plan_side_by_side("auto", pair, [0, 1])  # several GPUs: a worker process each
    assert not plan_side_by_side(2, pair, [0])  # asked for a number: worker processes, as --help says
    assert not plan_side_by_side("auto", [cuda_spec("model_a", "cpu"), cuda_spec("model_b", "cpu")], [0])
    assert not plan_side_by_side("auto", [cuda_spec("model_a", "cpu"), cuda_spec("model_b", "cpu")], [])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_a_step_captured_with_its_own_generator_draws_dropout_from_it(mnist_dir: Path) -> None:
    device = torch.device("cuda")
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), device)
    spec = RunSpec(model="alexnet", device="cuda")
    torch.manual_seed(0)
    model = prepare_model(spec, device)
    optimizer = make_optimizer(spec, model.parameters(), capturable=True)
    own = torch.Generator(device="cuda").manual_seed(5)
    with own_dropout_rng(own):
        step = capture_step(model, optimizer, nn.CrossEntropyLoss(), data.train_x, data.train_y, 64)
    default_before, own_before = torch.cuda.get_rng_state(), own.get_state()
    idx = torch.arange(64, device=device)
    for _i in range(3):
        step(idx)
    torch.cuda.synchronize()
    assert torch.equal(torch.cuda.get_rng_state(), default_before)  # replays leave the shared generator alone
    assert not torch.equal(own.get_state(), own_before)  # and advance the run's own


@pytest.mark.cuda
@needs_cuda
def test_resnet_beside_alexnet_on_one_gpu_train_side_by_side(tmp_path: Path, mnist_dir: Path) -> None:
    path = tmp_path / "pair.toml"
    path.write_text(
        """
name = "pair"
title = "ResNet18 beside AlexNet"
[defaults]
epochs = 2
batch_size = 64
log_every = 4
device = "cuda"
[grid]
model = ["resnet18", "alexnet"]
""",
        encoding="utf-8",
    )
    inv = PresetInvocation.prepare(
        load_preset_file(path), runs_dir=tmp_path / "runs", data_dir=mnist_dir, jobs="auto", gpus=[0]
    )
    events: list[Event] = []
    records = inv.run(events.append, RunControl())
    assert inv.side_by_side and inv.jobs == 2
    assert [r.status for r in records] == ["completed", "completed"], [r.error for r in records]
    assert all(r.env.pid == os.getpid() and all(math.isfinite(v) for v in r.batch_losses) for r in records)
    logs = [e.text for e in events if isinstance(e, LogMessage)]
    assert "Training 2 run(s), up to 2 at a time side by side in this process, each on its own CUDA stream" in logs
    assert not [text for text in logs if "capture failed" in text]
