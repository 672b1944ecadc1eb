"""Fused runs (tuitrain/train/fused.py, stacked.py): each run of a fused group trains as it would alone.

The tolerance: a fused run's batch losses equal the run's losses trained alone by `fit` to within rtol 1e-3, atol
1e-4, over two epochs of the synthetic data (16 steps). They are not bit-equal: a convolution over stacked weights is
one grouped convolution (another summation order), and the optimizer update is written out over the stacks rather
than torch's fused kernel; measured differences are about 1e-5 relative. The CUDA test does the same with the
group's step captured as one CUDA graph.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, EpochEnded, RunFinished, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.train.checkpoint import load_checkpoint
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData
from tuitrain.train.fused import FusedRun, fit_fused
from tuitrain.train.loop import RunPlace, fit, new_record
from tuitrain.train.stacked import fusable, fusion_key

RTOL, ATOL = 1e-3, 1e-4


def data_on(mnist_dir: Path, device: str = "cpu") -> TensorData:
    return TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device(device))


def alone(spec: RunSpec, data: TensorData) -> list[float]:
    return fit(spec, data=data, cores=None).batch_losses


def fused_run(spec: RunSpec, index: int, count: int, **kwargs) -> FusedRun:
    device = torch.device(spec.device if spec.device != "auto" else "cpu")
    record = new_record(spec, device, run_id=f"r{index}", label=f"lr={spec.lr} seed={spec.seed}")
    return FusedRun(spec, record, place=RunPlace(run_index=index, run_count=count), **kwargs)


def assert_matches(fused: list[float], solo: list[float]) -> None:
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(solo), rtol=RTOL, atol=ATOL)


def sweep(device: str = "cpu", optimizer: str = "adam") -> list[RunSpec]:
    settings = [(0.01, 0), (0.001, 1), (0.003, 7), (0.01, 3)]
    return [
        RunSpec(
            model="model_b", optimizer=optimizer, lr=lr, seed=seed, epochs=2, batch_size=64, log_every=1, device=device
        )
        for lr, seed in settings
    ]


def stop_at(control: RunControl, epoch: int, batch: int):
    def sink(event) -> None:
        if isinstance(event, BatchLosses) and (event.epoch, event.batch) == (epoch, batch):
            control.stop_run.set()

    return sink


def test_fused_losses_match_each_run_alone_with_one_stopped_midway(mnist_dir: Path) -> None:
    data = data_on(mnist_dir)
    specs = sweep()
    control = RunControl()
    runs = [fused_run(s, i, len(specs)) for i, s in enumerate(specs)]
    runs[1].control, runs[1].sink = control, stop_at(control, epoch=2, batch=3)
    records = fit_fused(runs, data=data)
    assert [r.status for r in records] == ["completed", "interrupted", "completed", "completed"]
    for record, spec in zip(records, specs, strict=True):
        solo = alone(spec, data)
        assert len(solo) == 16
        if record.status == "interrupted":  # stopped after 8 + 3 batches: those losses, its first epoch's result
            assert len(record.batch_losses) == 11 and len(record.epochs) == 1
            solo = solo[:11]
        else:
            assert len(record.epochs) == 2
        assert_matches(record.batch_losses, solo)
    # seeds give different initial weights and orders: the runs are not one run repeated
    assert records[0].batch_losses[0] != records[3].batch_losses[0]


def test_each_run_gets_its_own_events_and_record(mnist_dir: Path) -> None:
    data = data_on(mnist_dir)
    specs = sweep()[:2]
    events: list[list] = [[], []]
    runs = [fused_run(s, i, 2, sink=events[i].append) for i, s in enumerate(specs)]
    records = fit_fused(runs, data=data)
    for i, record in enumerate(records):
        kinds = [type(e) for e in events[i]]
        assert kinds[0] is RunStarted and kinds[-1] is RunFinished
        assert all(getattr(e, "run_id", record.id) == record.id for e in events[i])
        streamed = [v for e in events[i] if isinstance(e, BatchLosses) for v in e.losses]
        assert streamed == record.batch_losses
        ended = [e for e in events[i] if isinstance(e, EpochEnded)]
        assert [e.epoch for e in ended] == [1, 2] and ended[-1].test_accuracy == record.epochs[-1].test_accuracy
        assert record.train_size == 512 and record.test_size == 128 and record.batches_per_epoch == 8


def test_a_fused_run_says_its_start_and_end_as_it_would_alone(mnist_dir: Path) -> None:
    data = data_on(mnist_dir)
    spec = sweep()[0]
    fused: list = []
    fit_fused([fused_run(spec, 0, 1, sink=fused.append)], data=data)
    solo: list = []
    record = new_record(spec, torch.device("cpu"), run_id="r0", label=f"lr={spec.lr} seed={spec.seed}")
    fit(spec, solo.append, data=data, cores=None, record=record)
    started = [e for e in fused if isinstance(e, RunStarted)]
    assert started == [e for e in solo if isinstance(e, RunStarted)] and started[0].batches_per_epoch == 8
    # a fused run's losses match its run alone within a tolerance (see the module docstring): so may its accuracy
    (fused_end,) = [e for e in fused if isinstance(e, RunFinished)]
    (solo_end,) = [e for e in solo if isinstance(e, RunFinished)]
    assert fused_end.status == "completed" and fused_end.best_accuracy is not None
    assert fused_end.best_accuracy == pytest.approx(solo_end.best_accuracy, abs=100 / 128)
    assert replace(fused_end, best_accuracy=None) == replace(solo_end, best_accuracy=None)


def test_a_diverging_run_is_marked_and_the_others_go_on(mnist_dir: Path) -> None:
    data = data_on(mnist_dir)
    specs = [s.model_copy(update={"lr": lr}) for s, lr in zip(sweep(optimizer="sgd")[:2], (10.0, 0.01), strict=True)]
    records = fit_fused([fused_run(s, i, 2) for i, s in enumerate(specs)], data=data)
    assert records[0].status == "diverged" and "non-finite loss" in (records[0].error or "")
    assert records[1].status == "completed"
    assert_matches(records[1].batch_losses, alone(specs[1], data))
    # the diverged run stopped where it would alone
    solo = fit(specs[0], data=data, cores=None)
    assert solo.status == "diverged" and len(records[0].batch_losses) == len(solo.batch_losses)


def test_a_paused_run_leaves_the_group_and_goes_on_alone_when_resumed(mnist_dir: Path) -> None:
    data = data_on(mnist_dir)
    specs = sweep()[:3]
    paused = RunControl()
    seen_while_paused: list[int] = []

    def pause_then_resume(event) -> None:  # the other runs' events drive run 0's pause
        if isinstance(event, BatchLosses):
            if (event.epoch, event.batch) == (1, 2):
                paused.paused.set()
            elif paused.paused.is_set():
                seen_while_paused.append(event.batch)
                if (event.epoch, event.batch) == (2, 4):
                    paused.paused.clear()

    runs = [fused_run(s, i, 3) for i, s in enumerate(specs)]
    runs[0].control = paused
    runs[1].sink = pause_then_resume
    records = fit_fused(runs, data=data)
    assert seen_while_paused, "the others trained on while run 0 was paused"
    assert [r.status for r in records] == ["completed"] * 3
    for record, spec in zip(records, specs, strict=True):
        assert_matches(record.batch_losses, alone(spec, data))
    assert sum(e.paused_s for e in records[0].epochs) > 0


def test_a_fused_runs_checkpoint_resumes_alone(mnist_dir: Path, tmp_path: Path) -> None:
    data = data_on(mnist_dir)
    specs = sweep()[:2]
    control = RunControl()
    ckpt = tmp_path / "run0.ckpt.pt"
    runs = [fused_run(s, i, 2) for i, s in enumerate(specs)]
    runs[0].place = RunPlace(run_index=0, run_count=2, checkpoint_file=ckpt)
    runs[0].control, runs[0].sink = control, stop_at(control, epoch=2, batch=5)
    first = fit_fused(runs, data=data)[0]
    assert first.status == "interrupted" and first.checkpoint == ckpt.name
    state = load_checkpoint(ckpt, first.id)
    assert state["epoch"] == 1
    resumed = fit(specs[0], data=data, record=first, resume=state, cores=None)
    assert resumed.status == "completed" and len(resumed.epochs) == 2
    assert_matches(resumed.batch_losses, alone(specs[0], data))


def test_what_fuses() -> None:
    base = RunSpec(model="model_b")
    assert fusable(base) and fusable(base.model_copy(update={"model": "model_a"}))
    for model in ("resnet18", "alexnet", "mymod:Net"):  # batch norm, dropout, or unknown code: trained as today
        assert not fusable(base.model_copy(update={"model": model}))
    assert not fusable(base.model_copy(update={"precision": "bf16"}))
    key = fusion_key(base)
    assert fusion_key(base.model_copy(update={"lr": 0.1, "seed": 4, "epochs": 3})) == key
    assert fusion_key(base.model_copy(update={"activation": "tanh"})) != key
    assert fusion_key(base.model_copy(update={"batch_size": 32})) != key


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("graphs", [True, False], ids=["graph", "eager"])
def test_fused_on_cuda_matches_alone(mnist_dir: Path, graphs: bool) -> None:
    data = data_on(mnist_dir, "cuda")
    specs = sweep("cuda")
    control = RunControl()
    runs = [fused_run(s, i, len(specs)) for i, s in enumerate(specs)]
    runs[2].control, runs[2].sink = control, stop_at(control, epoch=1, batch=5)
    records = fit_fused(runs, data=data, graphs=graphs)
    assert records[2].status == "interrupted"
    for record, spec in zip(records, specs, strict=True):
        solo = alone(spec, data)[: len(record.batch_losses)]
        assert_matches(record.batch_losses, solo)


def test_fused_training_with_checkpoints_does_not_import_dynamo(mnist_dir: Path, tmp_path: Path) -> None:
    """torch.optim imports torch._dynamo (about 1 s on a CPU, several on a GPU machine); fused runs need none of it."""
    code = f"""
import sys
from pathlib import Path
import torch
from tuitrain.core.spec import RunSpec
from tuitrain.train.data import load_idx_folder
from tuitrain.train.fused import FusedRun, fit_fused
from tuitrain.train.device import TensorData
from tuitrain.train.loop import RunPlace, new_record
data = TensorData.from_arrays(load_idx_folder(Path({str(mnist_dir)!r})), torch.device("cpu"))
runs = []
for i, lr in enumerate((0.01, 0.001)):
    spec = RunSpec(model="model_b", lr=lr, epochs=1, device="cpu")
    place = RunPlace(run_index=i, run_count=2, checkpoint_file=Path({str(tmp_path)!r}) / f"{{i}}.ckpt.pt")
    runs.append(FusedRun(spec, new_record(spec, torch.device("cpu"), run_id=str(i), label=str(i)), place=place))
records = fit_fused(runs, data=data)
assert all(r.checkpoint for r in records), [r.checkpoint for r in records]
print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no dynamo"


def test_fused_tasks_send_each_runs_messages_under_its_index(mnist_dir: Path, tmp_path: Path) -> None:
    from tuitrain.core.tasks import CheckpointSaved, RecordSaved, RunTask, TaskDone, TaskEvent
    from tuitrain.records import parse_record
    from tuitrain.train.fused_tasks import train_fused_tasks

    arrays = load_idx_folder(mnist_dir)
    specs = sweep()[:3]
    tasks = [
        RunTask(i + 4, 9, f"inv-{i}", f"run {i}", s, "p", "inv", tmp_path / "runs" / f"{i}.json")
        for i, s in enumerate(specs)
    ]
    controls = {t.index: RunControl() for t in tasks}
    messages: list = []

    def send(message) -> None:
        messages.append(message)
        event = message.event if isinstance(message, TaskEvent) and message.index == 5 else None
        if isinstance(event, BatchLosses) and (event.epoch, event.batch) == (1, 6):
            controls[5].stop_run.set()

    train_fused_tasks(tasks, arrays, send, controls)
    assert [m.index for m in messages if isinstance(m, TaskDone)] == [4, 5, 6]
    for task in tasks:
        mine = [m for m in messages if getattr(m, "index", None) == task.index]
        final = parse_record([m for m in mine if isinstance(m, RecordSaved)][-1].text)
        assert final.id == task.run_id and final.run_index == task.index and final.run_count == 9
        assert final.status == ("interrupted" if task.index == 5 else "completed")
        events = [m.event for m in mine if isinstance(m, TaskEvent)]
        assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
        checkpoints = [m for m in mine if isinstance(m, CheckpointSaved)]
        assert len(checkpoints) == (0 if task.index == 5 else 2)
    assert not (tmp_path / "runs").exists()  # without write_files, writing is the receiver's job


def test_fusion_plan_fuses_fresh_runs_of_one_key_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.train.fused_tasks import fusion_plan

    base = RunSpec(model="model_b")
    specs = [
        base.model_copy(update={"lr": 0.1}),
        base.model_copy(update={"model": "resnet18"}),
        base.model_copy(update={"lr": 0.01}),
        base.model_copy(update={"activation": "tanh"}),
        base.model_copy(update={"lr": 0.001}),
        base.model_copy(update={"lr": 0.002}),
    ]
    fresh = [True, True, True, True, True, False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fusion_plan(specs, fresh) == []  # the CPU: fusing was measured slower there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fusion_plan(specs, fresh) == [[0, 2, 4]]  # resnet18 does not fuse; tanh alone; run 5 resumes
