"""Training with a share of the machine's cores: fit follows a changing share and records it per epoch, and a
preset run on the CPU holds a core lease (waiting for a free core when every core is held)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tuitrain.core.control import RunControl
from tuitrain.core.cores import CoreLease, machine_cores
from tuitrain.core.events import BatchLosses, RunWaiting
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.session import PresetInvocation
from tuitrain.train.data import load_idx_folder
from tuitrain.train.loop import fit

# 512 synthetic images in batches of 32: 16 batches an epoch
SPEC = RunSpec(model="model_a", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cpu", seed=3)


@dataclass
class Share:
    """A share of the cores as fit asks it: `count()` threads, and the pauses it was told of."""

    count: Callable[[], int]
    pauses: list[bool] = field(default_factory=list)

    def threads(self) -> int:
        return self.count()

    def set_paused(self, paused: bool) -> None:
        self.pauses.append(paused)


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

    record = fit(SPEC, sink, data=load_idx_folder(mnist_dir), cores=Share(share))
    assert record.status == "completed"
    assert record.env.threads == 2  # what it started with
    assert [e.threads for e in record.epochs] == [[2, 1], [1]]
    assert used_at_read_back[0] == 2 and used_at_read_back[-1] == 1  # torch really trained with the share
    assert len(asked) > 2 * 16  # asked at every batch
    assert torch.get_num_threads() == 2  # put back after the run


def test_a_paused_run_tells_its_share_and_goes_on(mnist_dir: Path, two_threads: None) -> None:
    control = RunControl()
    share = Share(lambda: 2)

    def sink(event) -> None:
        if isinstance(event, BatchLosses) and event.epoch == 1 and not share.pauses:
            control.paused.set()
            threading.Timer(0.3, control.paused.clear).start()

    record = fit(SPEC, sink, control, data=load_idx_folder(mnist_dir), cores=share)
    assert record.status == "completed"
    assert share.pauses == [True, False]
    assert record.epochs[0].paused_s >= 0.25 and record.epochs[1].paused_s == 0


def test_without_a_share_each_epoch_records_the_threads_it_used(mnist_dir: Path, two_threads: None) -> None:
    record = fit(SPEC, data=load_idx_folder(mnist_dir))
    assert [e.threads for e in record.epochs] == [[2], [2]]


def test_a_share_never_goes_above_torchs_default(mnist_dir: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = fit(SPEC, data=load_idx_folder(mnist_dir), cores=Share(lambda: 4))
    finally:
        torch.set_num_threads(before)
    assert [e.threads for e in record.epochs] == [[1], [1]]


def test_forced_threads_override_the_share(mnist_dir: Path, two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")
    record = fit(SPEC, data=load_idx_folder(mnist_dir), cores=Share(lambda: 2))
    assert record.env.threads == 1
    assert [e.threads for e in record.epochs] == [[1], [1]]


def test_a_preset_run_waits_for_a_free_core_and_trains_with_its_share(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, two_threads: None
) -> None:
    registry = tmp_path / "cache" / "cores"  # where the conftest's TUITRAIN_CACHE_DIR puts it
    held = [CoreLease(registry=registry) for _ in range(machine_cores())]  # every core taken by other runs
    for lease in held:
        assert lease.acquire()
    invocation = PresetInvocation.prepare(load_preset_file(tiny_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    events, waiting = [], threading.Event()

    def sink(event) -> None:
        events.append(event)
        if isinstance(event, RunWaiting):
            waiting.set()

    trainer = threading.Thread(target=invocation.run, args=(sink,), daemon=True)
    trainer.start()
    try:
        assert waiting.wait(60)
        (waited,) = [e for e in events if isinstance(e, RunWaiting)]
        assert waited.run_index == 0 and waited.run_id == f"{invocation.invocation_id}-01"
        assert waited.reason.startswith("waiting for a free core")
        held.pop().release()  # a core frees: the run takes it, sharing the cores with the other holders
        trainer.join(300)
        assert not trainer.is_alive()
    finally:
        for lease in held:
            lease.release()
    assert [r.status for r in invocation.records] == ["completed", "completed"]
    # as many holders as cores (the others and this one): one core each
    assert [e.threads for r in invocation.records for e in r.epochs] == [[1]] * 4
    assert list(registry.glob("*.json")) == []  # each run gave its lease back
