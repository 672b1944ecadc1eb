"""The logging API as a user's script uses it: a small model on generated data, run as a subprocess.

Waits are on conditions (the run file's contents) with generous timeouts, never fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tuitrain.catalog import effective_status
from tuitrain.core.errors import RecordError
from tuitrain.records import SCHEMA_VERSION, RunRecord, read_record

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

TIMEOUT_S = 120.0

SCRIPT = """
import sys, torch
from torch import nn
sys.path.insert(0, {root!r})
from tests.helpers import synthetic_digits
import tuitrain

mode, epochs = sys.argv[1], int(sys.argv[2])
images, labels = synthetic_digits(256, 1)
x = torch.from_numpy(images).float().div(255).unsqueeze(1)
y = torch.from_numpy(labels).long()
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU(), nn.Linear(32, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
with tuitrain.init(label="mlp", config={{"model": "mlp", "lr": 3e-3, "batch_size": 32}}, runs_dir={runs!r},
                   preset="script-test", epochs=None if mode == "forever" else epochs) as run:
    epoch = 0
    while mode == "forever" or epoch < epochs:
        for idx in torch.randperm(256).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss)
        if mode == "fail" and epoch == 1:
            raise ValueError("bad batch")
        with torch.no_grad():
            acc = 100.0 * (model(x).argmax(1) == y).float().mean()
        run.log_epoch(test_accuracy=acc, test_loss=0.5, test_total=256, lr=3e-3 / (epoch + 1))
        epoch += 1
"""


def start_script(tmp_path: Path, mode: str, epochs: int = 3) -> tuple[subprocess.Popen, Path]:
    runs = tmp_path / "runs"
    script = tmp_path / "train_mlp.py"
    script.write_text(SCRIPT.format(root=str(ROOT), runs=str(runs)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(epochs)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, runs


def wait_for_record(runs: Path, condition, what: str) -> RunRecord:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for path in runs.glob("*/*.json"):
            try:
                record = read_record(path)
            except RecordError:
                continue  # not written yet
            if condition(record):
                return record
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def only_record(runs: Path) -> RunRecord:
    (path,) = runs.glob("*/*.json")
    return read_record(path)


def test_completed_script_run_has_a_valid_v2_file(tmp_path):
    proc, runs = start_script(tmp_path, "complete", epochs=3)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    record = only_record(runs)
    assert record.schema_version == SCHEMA_VERSION == 5
    assert record.status == "completed" and record.error is None and record.ended_at is not None
    assert record.preset == "script-test" and record.label == "mlp"
    assert record.config == {"model": "mlp", "lr": 3e-3, "batch_size": 32}
    assert record.script is not None and record.script.path == str(tmp_path / "train_mlp.py")
    assert record.script.argv[1:] == ["complete", "3"]
    assert len(record.batch_losses) == 3 * 8
    # not given, so not guessed from the first epoch: each epoch says where it ended
    assert record.batches_per_epoch is None and [e.steps for e in record.epochs] == [8, 16, 24]
    assert [e.epoch for e in record.epochs] == [1, 2, 3] and record.spec.epochs == 3
    first = record.epochs[0]
    assert first.initial_loss == record.batch_losses[0] and first.final_loss == record.batch_losses[7]
    assert first.mean_loss == pytest.approx(sum(record.batch_losses[:8]) / 8)
    assert first.metrics == {"lr": pytest.approx(3e-3)} and record.epochs[2].metrics == {"lr": pytest.approx(1e-3)}
    assert first.test_total == 256 and 0 <= first.test_accuracy <= 100
    assert record.env.pid == proc.pid and record.env.torch_version != "not imported"
    assert record.epochs[-1].test_accuracy > 30  # it trained: chance is 10%


def test_exception_in_the_with_block_saves_the_run_failed(tmp_path):
    proc, runs = start_script(tmp_path, "fail", epochs=5)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 1 and "ValueError: bad batch" in err  # the script's own error still propagates
    record = only_record(runs)
    assert record.status == "failed" and record.error == "ValueError: bad batch"
    assert record.traceback is not None and "raise ValueError" in record.traceback
    assert len(record.epochs) == 1 and len(record.batch_losses) == 16  # nothing logged was lost


def test_ctrl_c_saves_the_run_interrupted(tmp_path):
    proc, runs = start_script(tmp_path, "forever")
    try:
        wait_for_record(runs, lambda r: len(r.epochs) >= 1, "a first epoch in the file")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    record = only_record(runs)
    assert record.status == "interrupted" and "Ctrl-C" in (record.error or "")
    assert record.spec.epochs == len(record.epochs)  # open-ended: as many as it trained


def test_kill_9_leaves_a_valid_file_that_shows_crashed(tmp_path):
    proc, runs = start_script(tmp_path, "forever")
    try:
        running = wait_for_record(runs, lambda r: len(r.epochs) >= 1, "a first epoch in the file")
        assert effective_status(running) == "running"
        assert running.spec.epochs == len(running.epochs) + 1  # open-ended: one more always coming
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT_S)
    record = only_record(runs)
    assert record.status == "running" and effective_status(record) == "crashed"
    assert len(record.epochs) >= 1
