"""Faults while saving: a second signal during the last write, an unwritable or vanished folder, a full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, write_mnist_dir
from tuitrain import catalog
from tuitrain.catalog import load_run_file
from tuitrain.records import read_record

TIMEOUT_S = 120
BATCH = 8
TRAIN = 512
TRAIN_LINE = re.compile(r"^Train Epoch: (\d+) \[(\d+)/(\d+) ")


def start_long_run(tmp_path: Path, preset: Path, data: Path, name: str) -> tuple[subprocess.Popen, Path]:
    runs = tmp_path / name
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TUITRAIN_CPU_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuitrain", "--preset", str(preset), "--no-ui", "--epochs", "200",
         "--batch-size", str(BATCH), "--runs-dir", str(runs), "--data-dir", str(data)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
            assert proc.returncode == 128 + signal.SIGTERM, err
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
