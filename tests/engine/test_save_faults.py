"""Faults while saving: a second signal during the last write, an unwritable or vanished folder, a full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, write_mnist_dir
from tuitrain import catalog
from tuitrain.catalog import load_run_file
from tuitrain.cli import main
from tuitrain.core.atomic import atomic_write
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RunFilesError
from tuitrain.executors.inprocess import THREAD_NAME as TRAINING_THREAD
from tuitrain.presets import load_preset_file
from tuitrain.records import read_record
from tuitrain.session import PresetInvocation
from tuitrain.signals import SignalExit, StopOnSignals
from tuitrain.train import loop
from tuitrain.train.checkpoint import load_checkpoint

TIMEOUT_S = 120
BATCH = 8
TRAIN = 512
TRAIN_LINE = re.compile(r"^Train Epoch: (\d+) \[(\d+)/(\d+) ")


def prepare(preset: Path, runs: Path, data: Path, **overrides) -> PresetInvocation:
    return PresetInvocation.prepare(load_preset_file(preset), runs_dir=runs, overrides=overrides, data_dir=data)


def start_long_run(tmp_path: Path, preset: Path, data: Path, name: str) -> tuple[subprocess.Popen, Path]:
    runs = tmp_path / name
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TUITRAIN_CPU_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuitrain",
            "--preset",
            str(preset),
            "--no-ui",
            "--epochs",
            "200",
            "--jobs",
            "1",
            "--batch-size",
            str(BATCH),
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
    return proc, runs


def first_run_file_with_epochs(runs: Path, proc: subprocess.Popen, epochs: int) -> Path:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in catalog.run_paths(runs):
            f = load_run_file(path)
            assert f.record is not None, f.error
            if len(f.record.epochs) >= epochs:
                return path
        time.sleep(0.02)
    raise AssertionError("no epoch completed in time")


def losses_read_back(out: str) -> int:
    """Batch losses the process reported (its last complete progress line), counted from the run's start."""
    last = [m for m in map(TRAIN_LINE.match, out.splitlines()) if m][-1]
    epoch, samples = int(last.group(1)), int(last.group(2))
    return (epoch - 1) * (TRAIN // BATCH) + -(-samples // BATCH)


def test_second_signal_during_the_last_save_still_leaves_the_run_interrupted(tmp_path: Path, tiny_preset: Path) -> None:
    """Two SIGTERMs a few ms apart, several times: the second one lands around the final write of the run file,
    which must still say interrupted and hold every loss the process reported."""
    data = write_mnist_dir(tmp_path / "data", n_train=TRAIN, n_test=32)
    gaps_s = [0.0, 0.002, 0.005, 0.01, 0.02]
    procs = [start_long_run(tmp_path, tiny_preset, data, f"runs{i}") for i in range(len(gaps_s))]
    try:
        for (proc, runs), gap in zip(procs, gaps_s):
            path = first_run_file_with_epochs(runs, proc, epochs=1)
            proc.send_signal(signal.SIGTERM)
            time.sleep(gap)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=TIMEOUT_S)
            # 143, or killed by the second SIGTERM itself when it came after training ended and the handlers went
            assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), err
            assert "Traceback" not in err, err
            record = read_record(path)
            assert record.status == "interrupted", (gap, record.status, err)
            assert record.ended_at is not None
            assert len(record.batch_losses) >= losses_read_back(out), gap
            assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT_S)


# --- a second signal inside RunControl.uninterrupted, in-process ----------------------------------


def test_second_signal_inside_an_uninterrupted_block_is_raised_after_it() -> None:
    control = RunControl()
    written = []
    with StopOnSignals(control) as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # handlers run in the main thread between bytecodes
        assert control.stop_all.is_set() and stops.received == signal.SIGTERM
        with pytest.raises(SignalExit) as info, control.uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # a third: still one exit
            time.sleep(0.05)
            written.append("the last write")
        assert info.value.exit_code == 143
    assert written == ["the last write"]


# --- the runs folder becomes unwritable, disappears, or fills up while a run trains -----------------


def fail_writes_after_first_checkpoint(monkeypatch, runs: Path, fault) -> None:
    """From the first checkpoint in an invocation folder under `runs` on, every new file there calls `fault(folder)`
    (as tempfile.mkstemp, which atomic writes start with, would fail in a folder made read-only or deleted)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        folder = Path(dir) if dir is not None else None
        if folder is not None and folder.parent == runs and list(folder.glob("*.ckpt.pt")):
            fault(folder)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def read_only(folder: Path) -> None:
    raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".tmp"))


def test_unwritable_folder_mid_run_gives_one_line_summary_and_exit_1(
    tmp_path: Path, tiny_preset: Path, mnist_dir: Path, monkeypatch, capsys
) -> None:
    runs = tmp_path / "runs"
    fail_writes_after_first_checkpoint(monkeypatch, runs, read_only)
    code = main(["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(runs), "--data-dir", str(mnist_dir)])
    out, err = capsys.readouterr()
    [folder] = runs.iterdir()
    assert code == 1
    assert "Traceback" not in out + err
    assert (
        err.strip()
        == f"tuitrain: error: {folder}: cannot write run files: no permission to write there (Permission denied)"
    )
    assert "Run activation=relu: interrupted" in out
    assert "Not started: activation=tanh" in out
    assert out.index("Not started") < out.index("Final acc") < out.index(f"Continue with: tuitrain --resume {folder}")
    # as the disk allows: the run file's last good write (running: shown crashed once this process is gone), from
    # before or after epoch 1's end (its checkpoint is written in the background, beside that write), and the
    # checkpoint of epoch 1 that --resume continues from
    saved = read_record(folder / "01-activation=relu.json")
    assert saved.status == "running" and len(saved.epochs) <= 1
    assert load_checkpoint(folder / "01-activation=relu.ckpt.pt", saved.id)["epoch"] == 1
    assert not list(folder.glob(".*.tmp"))


def delete_at_a_training_thread_write(folder: Path) -> None:
    """Really delete the folder, as another process would, when the training thread (the in-process worker's) writes
    there next (mkstemp then fails). Until it is gone: the checkpoint written meanwhile in a background thread may put
    a file back before the folder itself goes; that thread's write fails, or finds the folder gone."""
    if threading.current_thread().name == TRAINING_THREAD:
        while folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


def test_runs_folder_deleted_mid_run(tmp_path: Path, tiny_preset: Path, mnist_dir: Path, monkeypatch, capsys) -> None:
    runs = tmp_path / "runs"
    fail_writes_after_first_checkpoint(monkeypatch, runs, delete_at_a_training_thread_write)
    code = main(["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(runs), "--data-dir", str(mnist_dir)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out + err
    assert re.fullmatch(
        r"tuitrain: error: \S+: cannot write run files: the folder no longer exists \(No such file or directory\)\n",
        err,
    )
    assert "Not started: activation=tanh" in out and "interrupted" in out
    assert "Continue with" not in out  # nothing left to continue from
    assert list(runs.iterdir()) == []


def test_disk_full_at_a_checkpoint_ends_the_run_resumable(
    tmp_path: Path, tiny_preset: Path, mnist_dir: Path, monkeypatch
) -> None:
    whole = prepare(tiny_preset, tmp_path / "whole", mnist_dir, epochs=3).run(lambda e: None)

    real = loop.atomic_write_bytes
    written = []

    def disk_full_at_epoch_2(path: Path, data: bytes) -> None:
        def write_until_full(fh) -> None:
            fh.write(data[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")

        written.append(path)
        if len(written) == 2:
            atomic_write(path, write_until_full)
        else:
            real(path, data)

    monkeypatch.setattr(loop, "atomic_write_bytes", disk_full_at_epoch_2)
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir, epochs=3)
    with pytest.raises(RunFilesError, match="disk is full") as info:
        inv.run(lambda e: None)
    folder = inv.folder
    assert str(info.value) == f"{folder}: cannot write run files: the disk is full (No space left on device)"
    saved = read_record(folder / inv.files[0])
    assert saved.status == "interrupted" and saved.error == str(info.value)
    assert inv.not_started() == ["activation=tanh"]
    assert not list(folder.glob(".*.tmp"))

    monkeypatch.setattr(loop, "atomic_write_bytes", real)  # space is back
    resumed = PresetInvocation.resume(folder, data_dir=mnist_dir)
    assert list(resumed.resuming) == [0] and resumed.not_started() == ["activation=relu", "activation=tanh"]
    records = resumed.run(lambda e: None)
    assert [r.status for r in records] == ["completed", "completed"]
    assert read_record(folder / inv.files[0]).batch_losses == whole[0].batch_losses  # from epoch 2's start, exactly


def test_disk_full_at_the_last_checkpoint_written_in_the_background(
    tmp_path: Path, tiny_preset: Path, mnist_dir: Path, monkeypatch
) -> None:
    """The last epoch's checkpoint fails in the background thread that writes it: the run's end waits for it and
    ends the run as a failed synchronous write does (interrupted, the reason, RunFilesError); the checkpoint before
    it is what --resume continues from."""
    whole = prepare(tiny_preset, tmp_path / "whole", mnist_dir).run(lambda e: None)

    real = loop.atomic_write_bytes
    writers: list[threading.Thread] = []

    def disk_full_at_epoch_2(path: Path, data: bytes) -> None:
        def write_until_full(fh) -> None:
            fh.write(data[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")

        writers.append(threading.current_thread())
        if len(writers) == 2:
            atomic_write(path, write_until_full)
        else:
            real(path, data)

    monkeypatch.setattr(loop, "atomic_write_bytes", disk_full_at_epoch_2)
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir)
    with pytest.raises(RunFilesError, match="disk is full") as info:
        inv.run(lambda e: None)
    assert len(writers) == 2 and threading.main_thread() not in writers
    folder = inv.folder
    assert str(info.value) == f"{folder}: cannot write run files: the disk is full (No space left on device)"
    saved = read_record(folder / inv.files[0])
    assert saved.status == "interrupted" and saved.error == str(info.value)
    assert len(saved.epochs) == 2  # saved before its checkpoint was written
    assert load_checkpoint(folder / saved.checkpoint, saved.id)["epoch"] == 1
    assert inv.not_started() == ["activation=tanh"]
    assert not list(folder.glob(".*.tmp"))

    monkeypatch.setattr(loop, "atomic_write_bytes", real)  # space is back
    [record, _] = PresetInvocation.resume(folder, data_dir=mnist_dir).run(lambda e: None)
    assert record.status == "completed"
    assert read_record(folder / inv.files[0]).batch_losses == whole[0].batch_losses  # from epoch 2's start
