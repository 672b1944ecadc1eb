"""Training with a share of the machine's cores: fit follows a changing share and records it per epoch, and a
preset run on the CPU holds a core lease (waiting for a free core when every core is held)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tuitrain.core.events import BatchLosses
from tuitrain.core.spec import RunSpec
from tuitrain.train.data import load_idx_folder
from tuitrain.train.loop import fit

# 512 synthetic images in batches of 32: 16 batches an epoch
SPEC = RunSpec(model="model_a", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cpu", seed=3)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch's thread count before the run (the most a share may use) set to 2, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_fit_follows_a_changing_share_and_records_it_per_epoch(mnist_dir: Path, two_threads: None) -> None:
    asked = []

    def share() -> int:  # 2 for the start and the first batches, then 1 (another tuitrain started)
        asked.append(None)
        return 2 if len(asked) <= 6 else 1

    used_at_read_back = []

    def sink(event) -> None:
        if isinstance(event, BatchLosses):
            used_at_read_back.append(torch.get_num_threads())

    record = fit(SPEC, sink, data=load_idx_folder(mnist_dir), threads=share)
    assert record.status == "completed"
    assert record.env.threads == 2  # what it started with
    assert [e.threads for e in record.epochs] == [[2, 1], [1]]
    assert used_at_read_back[0] == 2 and used_at_read_back[-1] == 1  # torch really trained with the share
    assert len(asked) > 2 * 16  # asked at every batch
    assert torch.get_num_threads() == 2  # put back after the run


def test_without_a_share_each_epoch_records_the_threads_it_used(mnist_dir: Path, two_threads: None) -> None:
    record = fit(SPEC, data=load_idx_folder(mnist_dir))
    assert [e.threads for e in record.epochs] == [[2], [2]]


def test_a_share_never_goes_above_torchs_default(mnist_dir: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = fit(SPEC, data=load_idx_folder(mnist_dir), threads=lambda: 4)
    finally:
        torch.set_num_threads(before)
    assert [e.threads for e in record.epochs] == [[1], [1]]


def test_forced_threads_override_the_share(mnist_dir: Path, two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")
    record = fit(SPEC, data=load_idx_folder(mnist_dir), threads=lambda: 2)
    assert record.env.threads == 1
    assert [e.threads for e in record.epochs] == [[1], [1]]

