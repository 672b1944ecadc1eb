"""The fused executor in an invocation (session + executors.fused): with --jobs auto, the runs that fuse train in this
process as one group, each with its own run file, checkpoint, controls and record. On the CPU fusion_plan plans
nothing (fusing measured slower there), so these tests plan the CPU runs' fusion themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuitrain import session
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, LogMessage, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.records import read_record
from tuitrain.session import PresetInvocation
from tuitrain.train.checkpoint import load_checkpoint
from tuitrain.train.stacked import fusion_key


@pytest.fixture
def sweep_preset(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(
        """
name = "sweep"
title = "lr sweep"
description = "Three Model B runs and one Model A run."

[defaults]
model = "model_b"
epochs = 2
batch_size = 64
log_every = 2
device = "cpu"

[[runs]]
label = "lr=0.01"
lr = 0.01

[[runs]]
label = "Model A"
model = "model_a"

[[runs]]
label = "lr=0.003"
lr = 0.003

[[runs]]
label = "lr=0.001"
lr = 0.001
""",
        encoding="utf-8",
    )
    return path


def fuse_on_cpu(specs: list[RunSpec], fresh: list[bool]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, (spec, new) in enumerate(zip(specs, fresh, strict=True)):
        if new and (key := fusion_key(spec)) is not None:
            groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def test_auto_fuses_the_runs_that_fuse_and_trains_the_rest_alone(
    sweep_preset: Path, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "fusion_plan", fuse_on_cpu)
    inv = PresetInvocation.prepare(
        load_preset_file(sweep_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir, jobs="auto"
    )
    events: list = []

    def sink(event) -> None:  # the front end stops one run of the group by its own controls
        events.append(event)
        if isinstance(event, BatchLosses) and event.run_id == inv.run_id(2) and (event.epoch, event.batch) == (2, 2):
            control = inv.run_controls[event.run_id]
            assert control is not inv.run_controls[inv.run_id(0)]
            control.stop_run.set()

    records = inv.run(sink, RunControl())
    assert inv.fused == [[0, 2, 3]] and inv.runs_at_once() == 3
    assert [r.status for r in records] == ["completed", "completed", "interrupted", "completed"]
    assert [r.label for r in records] == ["lr=0.01", "Model A", "lr=0.003", "lr=0.001"]
    assert any(isinstance(e, LogMessage) and e.text.startswith("Fused: 3 runs") for e in events)
    started = [e.run_index for e in events if isinstance(e, RunStarted)]
    assert started == [0, 2, 3, 1]  # the fused group first, then the scheduler's run
    assert sorted(inv.started) == [0, 1, 2, 3]
    for index, record in enumerate(records):
        path = inv.folder / inv.files[index]
        saved = read_record(path)
        assert saved.status == record.status and saved.batch_losses == record.batch_losses
        state = load_checkpoint(path.with_name(path.stem + ".ckpt.pt"), record.id)
        assert state["epoch"] == (1 if index == 2 else 2)


def test_explicit_jobs_train_as_asked_without_fusing(
    sweep_preset: Path, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "fusion_plan", fuse_on_cpu)
    inv = PresetInvocation.prepare(
        load_preset_file(sweep_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir, jobs=1, overrides={"epochs": 1}
    )
    records = inv.run(lambda _e: None, RunControl())
    assert inv.fused == [] and [r.status for r in records] == ["completed"] * 4
