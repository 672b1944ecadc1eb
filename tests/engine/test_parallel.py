"""Several runs at once in worker processes (--jobs): same losses, every file written by the invoking process,
and what a killed worker, a killed invoking process and a stop signal leave on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, write_mnist_dir
from tuitrain.catalog import effective_status, pid_alive
from tuitrain.core.control import RunControl
from tuitrain.core.events import Event, RunFinished, RunStarted, RunWaiting
from tuitrain.presets import load_preset_file
from tuitrain.records import read_record
from tuitrain.session import PresetInvocation
from tuitrain.train.checkpoint import checkpoint_path

pytestmark = [pytest.mark.subprocess]

TIMEOUT_S = 120
EPOCHS = 30
"""Of the run whose worker is killed: enough that it is still training after its first epoch."""


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same thread count with and without workers, so that the losses can be compared exactly."""
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")


def prepare(preset: Path, runs: Path, data: Path, jobs: int, **overrides) -> PresetInvocation:
    return PresetInvocation.prepare(
        load_preset_file(preset), runs_dir=runs, overrides=overrides or None, data_dir=data, jobs=jobs
    )


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def records_in(folder: Path) -> list:
    return [read_record(p) for p in sorted(folder.glob("0*.json"))]


def test_parallel_runs_give_the_losses_of_serial_runs(
    tmp_path: Path, tiny_preset: Path, mnist_dir: Path, one_thread: None
) -> None:
    serial = prepare(tiny_preset, tmp_path / "serial", mnist_dir, jobs=1)
    serial_records = serial.run(lambda e: None)
    events: list[Event] = []
    parallel = prepare(tiny_preset, tmp_path / "parallel", mnist_dir, jobs=2)
    assert parallel.jobs == 2
    parallel_records = parallel.run(events.append)

    assert [r.status for r in parallel_records] == ["completed", "completed"]
    for one, other in zip(serial_records, parallel_records):
        assert other.batch_losses == one.batch_losses
        assert [e.test_correct for e in other.epochs] == [e.test_correct for e in one.epochs]
        assert other.env.pid != os.getpid()  # trained in a worker process
    # every file written by the invoking process, complete and readable
    assert parallel.folder is not None
    saved = records_in(parallel.folder)
    assert [r.batch_losses for r in saved] == [r.batch_losses for r in serial_records]
    assert all(checkpoint_path(parallel.folder / f).is_file() for f in parallel.files)
    started = [e.run_id for e in events if isinstance(e, RunStarted)]
    assert sorted(started) == sorted(r.id for r in parallel_records)
    assert {e.status for e in events if isinstance(e, RunFinished)} == {"completed"}


def long_preset(tmp_path: Path, runs: int = 2) -> Path:
    path = tmp_path / "long.toml"
    lrs = ", ".join(str(0.001 * (i + 1)) for i in range(runs))
    path.write_text(
        f"""
name = "long"
title = "Long runs on synthetic data"
[defaults]
model = "model_a"
epochs = 400
batch_size = 64
device = "cpu"
[grid]
lr = [{lrs}]
"""
    )
    return path


def test_a_run_behind_the_jobs_limit_is_said_to_wait_for_a_worker(tmp_path: Path, one_thread: None) -> None:
    mnist_dir = write_mnist_dir(tmp_path / "data", n_train=256, n_test=64)
    inv = prepare(long_preset(tmp_path, runs=3), tmp_path / "runs", mnist_dir, jobs=2, epochs=1)
    events: list[Event] = []
    records = inv.run(events.append)
    assert [r.status for r in records] == ["completed"] * 3
    waits = [(e.run_index, e.reason) for e in events if isinstance(e, RunWaiting)]
    assert waits == [(2, "waiting for a worker (2 runs train at once)")]  # said once, of the third run only
    third = records[2].id
    said = next(i for i, e in enumerate(events) if isinstance(e, RunWaiting))
    started = next(i for i, e in enumerate(events) if isinstance(e, RunStarted) and e.run_id == third)
    assert events[said].run_id == third and said < started


def test_a_killed_worker_leaves_its_run_crashed_while_the_others_go_on(tmp_path: Path, one_thread: None) -> None:
    mnist_dir = write_mnist_dir(tmp_path / "data", n_train=1024, n_test=64)
    inv = prepare(long_preset(tmp_path), tmp_path / "runs", mnist_dir, jobs=2, epochs=EPOCHS)
    control = RunControl()
    finished: list[RunFinished] = []
    trainer = threading.Thread(
        target=inv.run, args=(lambda e: finished.append(e) if isinstance(e, RunFinished) else None, control)
    )
    trainer.start()
    try:
        wait_for(lambda: inv.folder is not None and len(list(inv.folder.glob("0*.json"))) == 2, "both run files")
        assert inv.folder is not None
        first = inv.folder / inv.files[0]
        wait_for(lambda: len(read_record(first).epochs) >= 1, "an epoch of the first run")
        victim = read_record(first).env.pid
        os.kill(victim, signal.SIGKILL)
        trainer.join(TIMEOUT_S)
    finally:
        control.stop_all.set()
        trainer.join(TIMEOUT_S)
    crashed, other = records_in(inv.folder)
    assert crashed.status == "crashed" and f"pid {victim}) was killed by SIGKILL" in (crashed.error or "")
    assert len(crashed.epochs) >= 1 and checkpoint_path(first).is_file()
    assert other.status == "completed" and len(other.epochs) == EPOCHS
    assert {(e.label, e.status) for e in finished} == {(crashed.label, "crashed"), (other.label, "completed")}

    resumed = PresetInvocation.resume(inv.folder, data_dir=mnist_dir, jobs=2)
    assert list(resumed.resuming) == [0] and list(resumed.kept) == [1]
    records = resumed.run(lambda e: None)
    assert [r.status for r in records] == ["completed", "completed"]
    assert len(records[0].epochs) == EPOCHS and records[0].resumed_at


def start_cli(tmp_path: Path, preset: Path, data: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TUITRAIN_CPU_THREADS": "1"}
    command = [sys.executable, "-m", "tuitrain", "--preset", str(preset), "--no-ui", "--jobs", "2"]
    command += ["--runs-dir", str(runs), "--data-dir", str(data), *args]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, runs


def both_training(runs: Path, proc: subprocess.Popen) -> list[Path]:
    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()
        files = sorted(runs.glob("*/0*.json"))
        return len(files) == 2 and all(read_record(f).batch_losses for f in files)

    wait_for(ready, "two runs training")
    return sorted(runs.glob("*/0*.json"))


def test_a_killed_invoking_process_takes_its_workers_with_it(tmp_path: Path) -> None:
    data = write_mnist_dir(tmp_path / "data", n_train=2048, n_test=64)
    proc, runs = start_cli(tmp_path, long_preset(tmp_path), data)
    try:
        files = both_training(runs, proc)
        workers = [read_record(f).env.pid for f in files]
        proc.kill()
        proc.wait(TIMEOUT_S)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in workers), "workers trained on after the invoking process died"
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [read_record(f) for f in files]  # valid files: the last atomic writes
    assert [effective_status(r) for r in records] == ["crashed", "crashed"]


def test_a_stop_signal_saves_every_running_run_interrupted(tmp_path: Path) -> None:
    data = write_mnist_dir(tmp_path / "data", n_train=2048, n_test=64)
    proc, runs = start_cli(tmp_path, long_preset(tmp_path), data)
    files = both_training(runs, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [read_record(f).status for f in files] == ["interrupted", "interrupted"]
    assert f"Continue with: tuitrain --resume {files[0].parent}" in out


def test_resume_continues_every_interrupted_run_with_jobs(tmp_path: Path, one_thread: None) -> None:
    mnist_dir = write_mnist_dir(tmp_path / "data", n_train=1024, n_test=64)
    inv = prepare(long_preset(tmp_path), tmp_path / "runs", mnist_dir, jobs=2, epochs=EPOCHS)
    control = RunControl()
    trainer = threading.Thread(target=inv.run, args=(lambda e: None, control))
    trainer.start()
    try:
        wait_for(lambda: len(inv.run_controls) >= 1, "the first run to start")
        first_id = next(iter(inv.run_controls))
        inv.run_controls[first_id].paused.set()  # held until the second run is under way too
        assert inv.folder is not None
        second = inv.folder / inv.files[1]
        wait_for(lambda: second.is_file() and len(read_record(second).epochs) >= 1, "an epoch of the second run")
    finally:
        control.stop_all.set()
        trainer.join(TIMEOUT_S)
    assert [r.status for r in records_in(inv.folder)] == ["interrupted", "interrupted"]

    resumed = PresetInvocation.resume(inv.folder, data_dir=mnist_dir, jobs=2)
    assert sorted(resumed.resuming) == [0, 1] and resumed.jobs == 2
    records = resumed.run(lambda e: None)
    assert [(r.status, len(r.epochs)) for r in records] == [("completed", EPOCHS), ("completed", EPOCHS)]
    assert all(r.resumed_at and r.env.pid != os.getpid() for r in records)


def test_a_second_stop_signal_still_leaves_every_run_saved_interrupted_and_no_worker(tmp_path: Path) -> None:
    data = write_mnist_dir(tmp_path / "data", n_train=2048, n_test=64)
    proc, runs = start_cli(tmp_path, long_preset(tmp_path), data)
    files = both_training(runs, proc)
    workers = [read_record(f).env.pid for f in files]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals sent at once may arrive as one
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    # 130, or death by SIGINT when the second one came after the process had finished stopping (a shell shows 130)
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert [read_record(f).status for f in files] == ["interrupted", "interrupted"]
    assert not any(pid_alive(p) for p in workers)
