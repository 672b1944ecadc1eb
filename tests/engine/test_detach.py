"""`tuitrain --preset X --no-ui --detach`: checks first, trains in the background, returns at once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tuitrain.cli import main
from tuitrain.core.errors import RecordError
from tuitrain.follow import DETACHED_LOG
from tuitrain.records import read_record

TIMEOUT_S = 240  # generous: the tests share two cores with whatever else runs


@pytest.mark.slow
@pytest.mark.subprocess
def test_detach_returns_at_once_and_the_run_completes(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    code = main(
        [
            "--preset",
            str(tiny_preset),
            "--no-ui",
            "--detach",
            "--data-dir",
            str(mnist_dir),
            "--runs-dir",
            str(runs),
            "--epochs",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    tiny_preset.unlink()  # the child trains the runs planned in the folder: it never reads the preset again
    pid = int(re.search(r"pid (\d+)", out).group(1))
    folder = Path(re.search(r"Run folder: (.+)", out).group(1))
    try:
        # returned before the child could even import torch: nothing trained yet
        assert not [p for p in folder.glob("*.json") if read_record(p).status == "completed"]
        assert os.getsid(pid) == pid  # its own session: a closed terminal does not hang it up
        assert f"tuitrain watch {folder}" in out
        assert folder.parent == runs.resolve()
        deadline = time.monotonic() + TIMEOUT_S
        statuses: list[str] = []
        while statuses != ["completed", "completed"]:
            assert time.monotonic() < deadline, f"timed out; log:\n{(folder / DETACHED_LOG).read_text()}"
            time.sleep(0.2)
            try:
                statuses = [read_record(p).status for p in sorted(folder.glob("*.json"))]
            except RecordError:
                continue  # a file not written yet
        # the summary is printed after the files say completed
        while "Run files:" not in (folder / DETACHED_LOG).read_text():
            assert time.monotonic() < deadline, f"timed out; log:\n{(folder / DETACHED_LOG).read_text()}"
            time.sleep(0.2)
        records = [read_record(p) for p in sorted(folder.glob("*.json"))]
        assert {r.invocation for r in records} == {folder.name}  # the child used the folder it was given
        assert all(len(r.epochs) == 1 for r in records)  # overrides reached the child
        log = (folder / DETACHED_LOG).read_text()
        assert log.startswith("Preset tiny: ") and "2 run(s)" in log.splitlines()[0]
        assert "Train Epoch: 1" in log and "Run files:" in log
        assert [p for p in runs.iterdir()] == [folder]  # no second invocation folder
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_detach_checks_input_before_starting(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    assert (
        main(
            ["--preset", str(tiny_preset), "--detach", "--data-dir", str(tmp_path / "nowhere"), "--runs-dir", str(runs)]
        )
        == 2
    )
    assert "no such folder" in capsys.readouterr().err
    assert main(["--preset", "no_such_preset", "--detach", "--runs-dir", str(runs)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["--detach", "--runs-dir", str(runs)]) == 2
    assert "--detach needs --preset" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())  # nothing started, no folder left behind


def test_resume_detach_continues_in_the_background(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuitrain.core.control import RunControl
    from tuitrain.core.events import BatchLosses
    from tuitrain.presets import load_preset_file
    from tuitrain.session import LOCK_FILE, PresetInvocation

    control = RunControl()
    inv = PresetInvocation.prepare(
        load_preset_file(tiny_preset), runs_dir=tmp_path / "runs", overrides={"epochs": 2}, data_dir=mnist_dir
    )
    inv.run(lambda e: control.stop_all.set() if isinstance(e, BatchLosses) else None, control)
    folder = inv.folder.resolve()
    assert main(["--resume", str(folder), "--detach", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    pid = int(re.search(r"Resuming .* in the background \(pid (\d+)\)", out).group(1))
    try:
        assert os.getsid(pid) == pid
        assert f"Run folder: {folder}\n" in out and f"tuitrain watch {folder}" in out
        deadline = time.monotonic() + TIMEOUT_S
        statuses: list[str] = []
        while statuses != ["completed", "completed"]:
            assert time.monotonic() < deadline, f"timed out; log:\n{(folder / DETACHED_LOG).read_text()}"
            time.sleep(0.2)
            try:
                statuses = [read_record(folder / name).status for name in inv.files if (folder / name).exists()]
            except RecordError:
                continue
        log = (folder / DETACHED_LOG).read_text()
        assert f"Resuming {folder}: 1 run(s) to continue, 1 to start" in log
        assert (folder / LOCK_FILE).read_text().startswith(f"pid {pid} ")  # the child held the folder
        assert len(read_record(folder / inv.files[0]).resumed_at) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.subprocess
def test_detach_with_jobs_trains_the_runs_in_worker_processes(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--preset", str(tiny_preset), "--no-ui", "--detach", "--jobs", "2", "--epochs", "1"]
    assert main([*args, "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    pid = int(re.search(r"pid (\d+)", out).group(1))
    folder = Path(re.search(r"Run folder: (.+)", out).group(1))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "Run files:" not in ((folder / DETACHED_LOG).read_text() if (folder / DETACHED_LOG).exists() else ""):
            assert time.monotonic() < deadline, f"timed out; log:\n{(folder / DETACHED_LOG).read_text()}"
            time.sleep(0.2)
        records = [read_record(p) for p in sorted(folder.glob("*.json"))]
        assert [r.status for r in records] == ["completed", "completed"]
        assert pid not in {r.env.pid for r in records}  # trained by the child's workers, not the child
        log = (folder / DETACHED_LOG).read_text()
        assert "up to 2 at a time in worker processes" in log
        assert all(f"[{r.label}] Run completed" in log for r in records)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
