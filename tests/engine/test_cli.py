"""The headless CLI: output shape, files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuitrain.cli import main
from tuitrain.records import read_record

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.subprocess
def test_headless_run_prints_and_saves(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "tuitrain", "--preset", str(tiny_preset), "--no-ui", "--data-dir", str(mnist_dir),
         "--runs-dir", str(runs)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Train Epoch: 1 [128/512 (25%)]\tLoss: " in out
    assert "Test set: Average loss: " in out and "/128 (" in out
    assert "Epoch  Initial loss  Final loss  Test accuracy" in out
    assert "\x1b" not in out and "\r" not in out  # no control characters on a pipe
    files = sorted(runs.rglob("*.json"))
    assert len(files) == 2
    assert all(read_record(f).status == "completed" for f in files)
    assert f"Run files: {files[0].parent}" in out


def test_exit_codes(mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--preset", str(tiny_preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "r")]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(["--preset", "no_such_preset", "--no-ui"]) == 2
    assert "unknown preset 'no_such_preset'" in capsys.readouterr().err
    assert main(["--no-ui"]) == 2
    assert main(base + ["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(base + ["--epochs", "0"])
    assert info.value.code == 2


def test_diverged_run_exits_1(mnist_dir: Path, tiny_preset: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from tuitrain.train import loop

    class NanAfterTenBatches(torch.nn.CrossEntropyLoss):
        calls = 0

        def forward(self, input, target):
            NanAfterTenBatches.calls += 1
            loss = super().forward(input, target)
            return loss * float("nan") if NanAfterTenBatches.calls > 10 else loss

    monkeypatch.setattr(loop.nn, "CrossEntropyLoss", NanAfterTenBatches)
    runs = tmp_path / "r"
    code = main(["--preset", str(tiny_preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)])
    statuses = [read_record(p).status for p in sorted(runs.rglob("*.json"))]
    assert statuses == ["diverged", "diverged"]  # the sweep went on to the second run
    assert code == 1


def test_schema_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "RunRecord"
