"""Faults: signals stop cleanly, kill -9 leaves valid files, crashed runs show as crashed, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import SavedTexts, write_mnist_dir
from tests.schema_check import schema_errors
from tuitrain import catalog
from tuitrain.catalog import effective_status, load_run_file
from tuitrain.compare import Comparison
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses
from tuitrain.core.spec import RunSpec
from tuitrain.format import summary
from tuitrain.keeper import LocalRunFiles
from tuitrain.presets import load_preset_file
from tuitrain.records import (
    RunRecord,
    parse_record,
    read_record,
    record_schema,
)
from tuitrain.session import PresetInvocation
from tuitrain.signals import SignalExit, StopOnSignals
from tuitrain.train import loop
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData
from tuitrain.train.loop import fit

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def spec(**kw) -> RunSpec:
    base = dict(model="model_a", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cpu", seed=3)
    base.update(kw)
    return RunSpec(**base)


# --- headless process under signals ---------------------------------------------------------------


@pytest.fixture
def long_run(tmp_path: Path, tiny_preset: Path):
    """Start a headless two-run preset that trains for minutes; yield (process, runs folder)."""
    data = write_mnist_dir(tmp_path / "big", n_train=2048, n_test=64)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuitrain",
            "--preset",
            str(tiny_preset),
            "--no-ui",
            "--epochs",
            "200",
            "--jobs",
            "1",  # one run at a time: the second run is "not started" when the first is stopped
            "--runs-dir",
            str(runs),
            "--data-dir",
            str(data),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, runs
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


def wait_for_epochs(runs: Path, proc: subprocess.Popen, epochs: int = 1) -> Path:
    """Poll until the first run file holds `epochs` completed epochs; return its path."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in catalog.run_paths(runs):
            f = load_run_file(path)  # never sees a half-written file: writes are atomic
            assert f.record is not None, f.error
            if len(f.record.epochs) >= epochs:
                return path
        time.sleep(0.05)
    raise AssertionError("no epoch completed in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.slow
@pytest.mark.subprocess
def test_signal_stops_cleanly_and_saves_interrupted(long_run, sig) -> None:
    proc, runs = long_run
    path = wait_for_epochs(runs, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    record = read_record(path)
    assert record.status == "interrupted"
    assert len(record.epochs) >= 1
    batches = 2048 // 32
    assert len(record.batch_losses) >= len(record.epochs) * batches  # the partial epoch's losses too
    assert "Not started: activation=tanh" in out
    assert f"tuitrain --resume {path.parent}" in out
    assert [p.name for p in catalog.run_paths(runs)] == [path.name]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.subprocess
def test_second_ctrl_c_exits_at_once_with_valid_files(long_run) -> None:
    proc, runs = long_run
    path = wait_for_epochs(runs, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert read_record(path).status == "interrupted"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_leaves_valid_file_shown_as_crashed(long_run) -> None:
    proc, runs = long_run
    path = wait_for_epochs(runs, proc, epochs=2)
    time.sleep(0.3)  # somewhere inside an epoch
    proc.kill()
    proc.wait(timeout=TIMEOUT_S)
    text = path.read_text()
    json.loads(text)  # valid JSON
    record = parse_record(text)  # and passes the schema
    assert record.status == "running"
    assert effective_status(record) == "crashed"
    assert load_run_file(path).status == "crashed"
    assert "crashed" in summary([record])
    assert len(record.epochs) >= 2
    assert len(read_record(path).batch_losses) >= len(record.epochs) * (2048 // 32)  # from the series log
    # resumable from its last checkpoint
    inv = PresetInvocation.resume(path.parent)
    [(resumed, state)] = inv.resuming.values()
    # the checkpoint is written in the background while the next epoch trains: the run file may be an epoch ahead
    assert resumed.id == record.id and state is not None and state["epoch"] >= len(record.epochs) - 1
    assert inv.not_started() == ["activation=relu", "activation=tanh"]


# --- signal module in-process --------------------------------------------------------------------


def test_stop_on_signals_sets_stop_all_then_exits_on_second() -> None:
    control = RunControl()
    calls = []
    previous = signal.getsignal(signal.SIGTERM)
    with StopOnSignals(control, on_signal=lambda s, first: calls.append((s, first))) as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # handlers run in the main thread between bytecodes
        assert control.stop_all.is_set() and stops.received == signal.SIGTERM and stops.exit_code == 143
        with pytest.raises(SignalExit) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert info.value.exit_code == 143
    assert calls == [(signal.SIGTERM, True), (signal.SIGTERM, False)]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_app_style_handlers_never_raise() -> None:
    control = RunControl()
    with StopOnSignals(control, [signal.SIGHUP], exit_on_second=False) as stops:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
    assert control.stop_all.is_set() and stops.exit_code == 129


def test_keyboard_interrupt_inside_fit_saves_interrupted(mnist_dir: Path) -> None:
    saved: list[str] = []

    def sink(event) -> None:
        if isinstance(event, BatchLosses) and event.first_step >= 8:
            raise SignalExit(signal.SIGINT)

    with pytest.raises(SignalExit):
        fit(spec(), sink, files=SavedTexts(saved), data=load_idx_folder(mnist_dir))
    assert parse_record(saved[-1]).status == "interrupted"


# --- durability: read-backs and saves are also driven by time ----------------------------------


def test_slow_model_still_persists_every_few_seconds(mnist_dir: Path, monkeypatch) -> None:
    """With log_every far beyond an epoch, losses still come back (and are saved) on the clock."""
    monkeypatch.setattr(loop, "READ_BACK_EVERY_S", 0.0)
    monkeypatch.setattr(loop, "PERSIST_EVERY_S", 0.0)
    events, texts = [], []
    record = fit(
        spec(epochs=1, log_every=100000),
        events.append,
        files=SavedTexts(texts),
        data=load_idx_folder(mnist_dir),
    )
    chunks = [len(e.losses) for e in events if isinstance(e, BatchLosses)]
    assert chunks == [1] * 16
    saves = [parse_record(t).steps_logged for t in texts]
    assert saves[1:17] == list(range(1, 17))  # after the start, one save per batch
    assert record.status == "completed"


def test_heartbeat_during_long_pause(mnist_dir: Path) -> None:
    control = RunControl()
    control.paused.set()
    beats = []
    import threading

    t = threading.Thread(target=lambda: control.wait_while_paused(lambda: beats.append(1), every_s=0.05))
    t.start()
    time.sleep(0.3)
    control.paused.clear()
    t.join(5)
    assert len(beats) >= 2


# --- crashed detection ----------------------------------------------------------------------------


def running_record(**env) -> RunRecord:
    record = fit(spec(epochs=1, limit_train_batches=1, subset=32, test_subset=8), data=_tiny_arrays())
    record.status, record.ended_at = "running", None
    for k, v in env.items():
        setattr(record.env, k, v)
    return record


def _tiny_arrays():
    import numpy as np

    from tuitrain.train.data import MnistArrays

    x = np.zeros((32, 28, 28), dtype=np.uint8)
    y = np.arange(32, dtype=np.int64) % 10
    return MnistArrays(x, y, x[:8], y[:8], "test")


def test_effective_status_cases(monkeypatch) -> None:
    live = running_record()  # this process, this host
    assert effective_status(live) == "running"
    # a live pid but an old heartbeat (long pause): still running on this host
    live.heartbeat_at -= timedelta(hours=2)
    assert effective_status(live) == "running"
    dead = running_record(pid=2**22 + 4321)
    assert effective_status(dead) == "crashed"
    # pid reused by a process younger than the run
    reused = running_record()
    reused.started_at -= timedelta(days=3650)
    monkeypatch.setattr(catalog, "process_start_time", lambda pid: time.time())
    assert effective_status(reused) == "crashed"
    # ... unless the run was resumed by that process
    reused.resumed_at.append(reused.started_at + timedelta(days=3650))
    assert effective_status(reused) == "running"
    # another host: only the heartbeat tells
    remote = running_record(host="elsewhere", pid=1)
    assert effective_status(remote) == "running"
    remote.heartbeat_at -= timedelta(seconds=catalog.STALE_AFTER_S + 1)
    assert effective_status(remote) == "crashed"
    assert effective_status(remote.model_copy(update={"status": "completed"})) == "completed"


def test_process_start_time_of_this_process() -> None:
    started = catalog.process_start_time(os.getpid())
    if started is None:
        pytest.skip("no /proc")
    assert started <= time.time() + 1


# --- divergence -----------------------------------------------------------------------------------


def test_divergence_continue_trains_every_epoch_and_file_reads_back(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    import torch

    data = TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cpu"))
    data.train_x[5] = float("nan")  # every batch holding image 5 has a NaN loss
    record = fit(spec(on_divergence="continue"), data=data, files=LocalRunFiles(path))
    assert record.status == "diverged"
    assert len(record.epochs) == 2  # kept training
    assert "training continued" in record.error
    assert len(read_record(path).batch_losses) == 32
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    saved = read_record(path)
    assert saved.status == "diverged"
    assert any(v != v for v in saved.batch_losses)  # NaN survives the round trip
    # the file, "NaN" strings and all, is what `tuitrain schema` describes
    assert '"NaN"' in text
    assert schema_errors(json.loads(text), record_schema()) == []
    # every epoch trained on after the first NaN (in epoch 1): none came before it
    [note] = [n for n in Comparison.from_paths([path]).observations() if "diverged" in n]
    assert "; no epoch completed before it, and its figures for epochs 1–2 come after it." in note


def test_sweep_goes_on_after_a_diverged_run(mnist_dir: Path, tmp_path: Path) -> None:
    preset = tmp_path / "div.toml"
    preset.write_text(
        'name = "div"\ntitle = "t"\n[defaults]\nmodel = "model_a"\nepochs = 1\nbatch_size = 32\nlog_every = 4\n'
        'device = "cpu"\nseed = 0\n[[runs]]\nlabel = "explodes"\noptimizer = "sgd"\nlr = 10.0\n'
        '[[runs]]\nlabel = "fine"\n'
    )
    inv = PresetInvocation.prepare(load_preset_file(preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    records = inv.run(lambda e: None)
    assert [r.status for r in records] == ["diverged", "completed"]
    assert [read_record(inv.folder / f).status for f in inv.files] == ["diverged", "completed"]
