"""Shared fixtures. Tests never touch the real MNIST: they build small IDX files and load them
through the real loading code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_mnist_dir
from tuitrain.core import cores


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A folder with a small synthetic MNIST (512 train / 128 test, gzip)."""
    return write_mnist_dir(tmp_path / "mnist")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests off the user's cache, data and presets settings."""
    monkeypatch.setenv("TUITRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TUITRAIN_DATA_DIR", raising=False)
    monkeypatch.delenv("TUITRAIN_PRESETS_DIR", raising=False)
    monkeypatch.delenv("TUITRAIN_CUDA_GRAPHS", raising=False)
    # runs in this process split the cores as their leases say, whatever else the machine runs meanwhile (the
    # measure of other work is tested on its own in tests/unit/test_cores.py)
    monkeypatch.setattr(cores.OtherWork, "busy_cores", lambda self, **_: 0)


@pytest.fixture
def tiny_preset(tmp_path: Path) -> Path:
    """A two-run preset file that trains in about a second on the synthetic data."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        """
name = "tiny"
title = "Tiny test preset"
description = "Two short runs on synthetic data."

[defaults]
model = "model_a"
epochs = 2
batch_size = 32
lr = 0.003
log_every = 4
device = "cpu"

[grid]
activation = ["relu", "tanh"]
""",
        encoding="utf-8",
    )
    return path
