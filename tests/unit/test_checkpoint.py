"""Checkpoint states taken at an epoch end, and the writer that writes them (in the background or at once)."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
import torch

from tuitrain.core.spec import RunSpec
from tuitrain.train.checkpoint import CheckpointWriter, checkpoint_bytes, checkpoint_state, load_checkpoint
from tuitrain.train.device import prepare_model
from tuitrain.train.loop import new_record
from tuitrain.train.optim import make_optimizer


def test_a_checkpoint_state_keeps_the_values_of_its_epoch_end_while_training_goes_on() -> None:
    torch.manual_seed(0)
    spec = RunSpec(model="model_a", optimizer="adam", device="cpu")
    cpu = torch.device("cpu")
    model = prepare_model(spec, cpu)
    optimizer = make_optimizer(spec, model.parameters())
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))

    def train_step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    train_step()
    record = new_record(spec, cpu, run_id="run-1", label="run")
    state = checkpoint_state(model, optimizer, torch.Generator().manual_seed(1), record, 1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    train_step()  # in place: the live tensors (and the optimizer's step count) move on

    for name, parameter in model.named_parameters():
        assert not torch.equal(parameter, weights[name]), name
    saved = load_checkpoint(Path("state.ckpt.pt"), "run-1", data=checkpoint_bytes(state))
    for name, value in weights.items():
        assert torch.equal(state["model"][name], value) and torch.equal(saved["model"][name], value)
    for key, value in moments.items():
        assert torch.equal(saved["optimizer"]["state"][0][key], value), key
    assert state["model"]._metadata == model.state_dict()._metadata  # what load_state_dict reads versions from


def test_writer_hands_the_outcome_of_a_background_write_to_the_training_thread(tmp_path: Path) -> None:
    release = threading.Event()
    calls: list[tuple[Path, bytes, bool]] = []

    def write(path: Path, data: bytes) -> None:
        calls.append((path, data, threading.current_thread() is threading.main_thread()))
        release.wait()
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    writer = CheckpointWriter(write, background=True)
    state = {"version": 1, "weights": torch.ones(3)}
    writer.start(tmp_path / "a.ckpt.pt", state)
    assert writer.collect(wait=False) is None  # still writing
    with pytest.raises(AssertionError, match="not collected"):
        writer.start(tmp_path / "a.ckpt.pt", state)  # one write at a time
    release.set()
    assert writer.collect(wait=True) == tmp_path / "a.ckpt.pt"
    assert writer.collect(wait=True) is None  # collected once
    writer.start(tmp_path / "a.ckpt.pt", state)
    with pytest.raises(OSError, match="No space left"):
        writer.collect(wait=True)
    assert writer.collect(wait=True) is None
    assert [on_main for _, _, on_main in calls] == [False, False]
    assert calls[0][1] == checkpoint_bytes(state)


def test_a_synchronous_writer_has_written_when_start_returns(tmp_path: Path) -> None:
    written: list[Path] = []
    writer = CheckpointWriter(lambda path, data: written.append(path), background=False)
    writer.start(tmp_path / "a.ckpt.pt", {"version": 1})
    assert written == [tmp_path / "a.ckpt.pt"]
    assert writer.collect(wait=False) == tmp_path / "a.ckpt.pt"
