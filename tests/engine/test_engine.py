"""The engine end to end on generated data: fit, events, determinism, record files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, EpochEnded, RunFinished, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.records import read_record
from tuitrain.session import PresetInvocation
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData
from tuitrain.train.loop import fit


def spec(**kw) -> RunSpec:
    base = dict(model="model_a", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cpu", seed=3)
    base.update(kw)
    return RunSpec(**base)


def test_fit_emits_events_and_learns(mnist_dir: Path) -> None:
    events = []
    record = fit(spec(epochs=3), events.append, data=load_idx_folder(mnist_dir))
    assert record.status == "completed"
    assert [type(e) for e in events][0] is RunStarted
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    batches = 512 // 32
    assert len(record.batch_losses) == 3 * batches
    streamed = [v for e in events if isinstance(e, BatchLosses) for v in e.losses]
    assert streamed == record.batch_losses
    # losses arrive in chunks of log_every, not one message per batch
    assert all(len(e.losses) <= 4 for e in events if isinstance(e, BatchLosses))
    first = record.epochs[0]
    assert first.initial_loss == record.batch_losses[0]
    assert first.final_loss == record.batch_losses[batches - 1]
    assert first.test_total == 128
    assert first.test_accuracy == pytest.approx(100 * first.test_correct / 128)
    assert record.epochs[-1].test_accuracy > 60  # the synthetic digits are easy


def test_same_seed_same_losses_on_cpu(mnist_dir: Path) -> None:
    data = load_idx_folder(mnist_dir)
    a = fit(spec(epochs=1, seed=7), data=data)
    b = fit(spec(epochs=1, seed=7), data=data)
    c = fit(spec(epochs=1, seed=8), data=data)
    assert a.batch_losses == b.batch_losses
    assert a.batch_losses != c.batch_losses


def test_stop_run_interrupts_and_keeps_losses(mnist_dir: Path) -> None:
    control = RunControl()

    def sink(event):
        if isinstance(event, BatchLosses) and event.first_step >= 8:
            control.stop_run.set()

    record = fit(spec(epochs=2), sink, control, data=load_idx_folder(mnist_dir))
    assert record.status == "interrupted"
    assert record.epochs == []
    assert len(record.batch_losses) == 12


def test_nan_loss_marks_diverged(mnist_dir: Path) -> None:
    import torch

    data = TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cpu"))
    data.train_x[5] = float("nan")  # any batch holding image 5 has a NaN loss
    events = []
    record = fit(spec(epochs=3, log_every=2), events.append, data=data)
    assert record.status == "diverged"
    assert "non-finite loss" in record.error
    assert record.epochs == []
    assert events[-1].status == "diverged"


@pytest.mark.slow
def test_preset_invocation_writes_valid_files(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    inv = PresetInvocation.prepare(load_preset_file(tiny_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    records = inv.run(lambda e: None)
    assert [r.status for r in records] == ["completed", "completed"]
    files = sorted(inv.folder.glob("*.json"))
    assert len(files) == 2
    for path, rec in zip(files, records):
        saved = read_record(path)
        assert saved.status == "completed"
        assert saved.label == rec.label
        assert saved.invocation == inv.invocation_id
        assert len(saved.epochs) == 2
        assert saved.spec.data_source == str(mnist_dir)
    assert not list(inv.folder.glob(".*.tmp"))


@pytest.mark.subprocess
def test_engine_does_not_import_textual() -> None:
    code = (
        "import sys; import tuitrain.train.loop, tuitrain.train.data, tuitrain.session, tuitrain.presets, "
        "tuitrain.records, tuitrain.headless, tuitrain.format; "
        "print('textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


PAUSE_S = 0.3


class PauseOnce(RunControl):
    """Pauses at the first batch boundary after `paused` is set, for at least PAUSE_S (a sleep, then unpaused)."""

    def wait_while_paused(self, heartbeat=None, every_s: float = 30.0) -> float:
        time.sleep(PAUSE_S)
        self.paused.clear()
        return super().wait_while_paused(heartbeat, every_s)


def test_epoch_time_is_training_plus_evaluation_and_pauses_are_recorded_apart(mnist_dir: Path) -> None:
    control = PauseOnce()
    events = []

    def sink(event) -> None:
        events.append(event)
        if isinstance(event, BatchLosses) and event.first_step == 0:
            control.paused.set()

    record = fit(spec(epochs=2), sink, control, data=load_idx_folder(mnist_dir))
    first, second = record.epochs
    assert first.paused_s >= PAUSE_S and second.paused_s == 0
    for epoch in record.epochs:  # duration = training time (samples / samples per second) + evaluation
        assert epoch.duration_s == pytest.approx(record.train_size / epoch.samples_per_s + epoch.eval_s, rel=1e-9)
    assert [e.paused_s for e in events if isinstance(e, EpochEnded)] == [first.paused_s, second.paused_s]
    # elapsed_s counts the finished epochs' durations and this epoch's training so far: pauses never
    for e in (e for e in events if isinstance(e, BatchLosses)):
        before = sum(x.duration_s for x in record.epochs[: e.epoch - 1])
        this = record.epochs[e.epoch - 1]
        assert before <= e.elapsed_s <= before + this.duration_s - this.eval_s
