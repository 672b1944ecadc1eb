"""The app in a real terminal (a pty) whose other end closes, as when its window or tmux session is closed: the
process ends (with SIGHUP's exit code, its run saved as interrupted) instead of reading end-of-file for ever.
No SIGHUP is sent: the app is not in the terminal's session, as when the hang-up reached only the shell."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tuitrain import catalog
from tuitrain.records import read_record

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

EXIT_WITHIN_S = 60


def app_in_a_pty(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`tuitrain ARGS` on a new pty (stdin, stdout and stderr), in a session of its own; the pty's other end."""
    ours, theirs = os.openpty()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TERM": "xterm-256color",
        "TUITRAIN_PRESETS_DIR": str(tmp_path / "presets"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuitrain", *args],
        stdin=theirs,
        stdout=theirs,
        stderr=theirs,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    os.close(theirs)
    return proc, ours


def read_until(fd: int, proc: subprocess.Popen, done: Callable[[bytes], bool], what: str) -> None:
    """Read the app's screen output until `done(output so far)` holds."""
    screen = bytearray()
    deadline = time.monotonic() + 180
    while not done(bytes(screen)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        try:
            if select.select([fd], [], [], 0.2)[0]:
                screen.extend(os.read(fd, 65536))
        except OSError:  # EIO: every process holding the pty's end has ended
            raise AssertionError(f"the app ended ({proc.wait()}) before {what}: {bytes(screen[-2000:])!r}") from None


def hang_up(fd: int, proc: subprocess.Popen) -> int:
    os.close(fd)
    try:
        return proc.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the app was still running {EXIT_WITHIN_S} s after its terminal closed") from None


def test_the_home_screen_ends_when_its_terminal_closes(tmp_path: Path) -> None:
    proc, fd = app_in_a_pty(["--runs-dir", str(tmp_path / "runs")], tmp_path)
    read_until(fd, proc, lambda screen: b"Presets" in screen, "the home screen")
    assert hang_up(fd, proc) == 129


def test_training_is_saved_interrupted_when_its_terminal_closes(
    tmp_path: Path, mnist_dir: Path, tiny_preset: Path
) -> None:
    long_preset = tmp_path / "long.toml"
    # long enough to hang up mid-training; its subset (all 512 synthetic images) keeps its estimate, timed beside
    # whatever else the machine runs, from the hours that would make the app ask first
    long_preset.write_text(
        tiny_preset.read_text().replace("epochs = 2", "epochs = 500\nsubset = 512").replace("tiny", "long")
    )
    runs = tmp_path / "runs"
    proc, fd = app_in_a_pty(
        ["--preset", str(long_preset), "--data-dir", str(mnist_dir), "--runs-dir", str(runs)], tmp_path
    )

    def training(_: bytes) -> bool:
        return any(read_record(p).epochs for p in catalog.run_paths(runs)) if runs.exists() else False

    read_until(fd, proc, training, "an epoch to be saved")
    assert hang_up(fd, proc) == 129
    statuses = [read_record(p).status for p in catalog.run_paths(runs)]
    assert statuses and set(statuses) == {"interrupted"}
