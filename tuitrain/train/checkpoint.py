"""Epoch-end checkpoints beside the run file, for `tuitrain --resume`.

A checkpoint holds what continuing needs to give the same batch losses as an uninterrupted run
(on the CPU): model and optimizer state, the global torch RNG (CUDA too), the batch-order
generator, and the run's completed epochs and its step count (losses recorded) at that epoch end:
on resume the checkpoint wins over the run file, which may be ahead of it (a crash while the
checkpoint was being written, in the background while the next epoch trained) or behind it (a crash
before the run file was saved); the series log, which holds the losses, is rewound to its step
count (tuitrain.core.serieslog). Version 1 checkpoints held every loss instead (`batch_losses`);
they still resume. Serialised in memory, then written atomically; read with
torch.load(weights_only=True): plain tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuitrain.core.errors import RecordError
from tuitrain.records import EpochRecord, RunRecord

CHECKPOINT_VERSION = 2
"""Version written; 2 keeps the step count where 1 kept every batch loss."""
READABLE_VERSIONS = (1, 2)
SUFFIX = ".ckpt.pt"


def checkpoint_path(run_path: Path) -> Path:
    """`01-lr=0.01.json` -> `01-lr=0.01.ckpt.pt` in the same folder."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.stem + SUFFIX)


def checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | dict[str, Any],
    order_gen: torch.Generator,
    record: RunRecord,
    steps: int,
) -> dict[str, Any]:
    """The checkpoint as of now (`steps`: the run's losses recorded so far), in memory: every tensor a copy (on its
    device: cheap on a GPU), so that training on (in-place updates of the model and optimizer) cannot change it while
    it is serialised elsewhere. `optimizer`: the optimizer, or its state dict (a fused run's,
    stacked.StackedRuns.unstack)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "run_id": record.id,
        "epoch": len(record.epochs),
        "model": copied(model.state_dict()),
        # state_dict() hands out the optimizer's own per-parameter dicts and tensors
        "optimizer": copied(optimizer if isinstance(optimizer, dict) else optimizer.state_dict()),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "order_rng": order_gen.get_state(),
        "epochs": [e.model_dump() for e in record.epochs],
        "steps": steps,
    }
    if torch.cuda.is_initialized():
        # the copies are queued on this thread's stream: done before a thread on another stream reads them (a few ms
        # after the epoch's evaluation, which waited for the training already)
        torch.cuda.synchronize()
    return state


def copied(value: Any) -> Any:
    """`value` with every tensor in it cloned and every dict, list and tuple in it a new one."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        new = copy.copy(value)  # an OrderedDict stays one, with its attributes (a state dict's _metadata)
        for key, item in new.items():
            new[key] = copied(item)
        return new
    if isinstance(value, (list, tuple)):
        return type(value)(copied(v) for v in value)
    return value


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint state (checkpoint_state) as its file holds it. Serialised in memory, then written: torch.save
    writing to a full disk fails with an opaque "unexpected pos" RuntimeError, while writing the bytes raises the
    OSError (ENOSPC) that says what happened."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


WriteCheckpoint = Callable[[Path, bytes], None]
"""Writes a checkpoint's bytes to its file: atomically here, or sent to the process that writes the run files."""


class CheckpointWriter:
    """Serialises and writes checkpoint states with `write`, one at a time: in a background thread (`background`),
    while the next epoch trains, or at once in the caller's thread.

    `collect` hands the outcome to the training thread: the file written, or the exception the write raised, as a
    synchronous write would have raised it. The thread is a daemon: a process leaving without awaiting it (only a
    crash does) leaves the old checkpoint file, or the new one, never part of one (the write is atomic)."""

    def __init__(self, write: WriteCheckpoint, *, background: bool) -> None:
        self.write, self.background = write, background
        self.thread: threading.Thread | None = None
        self.written: Path | None = None
        self.failure: BaseException | None = None

    def start(self, path: Path, state: dict[str, Any]) -> None:
        """Write `state` (checkpoint_state) to `path`; the previous write must have been collected."""
        assert self.thread is None and self.written is None and self.failure is None, "a write not collected"
        if not self.background:
            self._write(path, state)
            return
        self.thread = threading.Thread(target=self._write, args=(path, state), name="checkpoint-writer", daemon=True)
        self.thread.start()

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            self.write(path, checkpoint_bytes(state))
        except BaseException as exc:  # noqa: BLE001 - raised in the training thread by collect
            self.failure = exc
        else:
            self.written = path

    def collect(self, *, wait: bool) -> Path | None:
        """The file of the write started last, once it is written (then None until the next start); None while it is
        being written (`wait`: waits for it first) or when there is none. The write's exception is raised here."""
        if self.thread is not None:
            if not wait and self.thread.is_alive():
                return None
            self.thread.join()  # interrupted by a KeyboardInterrupt, it is still there to wait for again
            self.thread = None
        failure, written, self.failure, self.written = self.failure, self.written, None, None
        if failure is not None:
            raise failure
        return written


def load_checkpoint(path: Path, run_id: str | None = None, *, data: bytes | None = None) -> dict[str, Any]:
    """Read a checkpoint (safely: weights_only) from `path`, or from `data` (its bytes, read elsewhere; `path` then
    names it in messages); RecordError if it is missing, damaged or not this run's."""
    path = Path(path)
    try:
        state = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RecordError(f"{path}: checkpoint file is missing.") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a damaged file
        raise RecordError(f"{path}: damaged checkpoint ({type(exc).__name__}: {str(exc)[:120]}).") from None
    if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
        raise RecordError(f"{path}: not a tuitrain checkpoint of version {CHECKPOINT_VERSION} or older.")
    if run_id is not None and state.get("run_id") != run_id:
        raise RecordError(f"{path}: checkpoint of run {state.get('run_id')!r}, not of {run_id!r}.")
    return state


def restore_checkpoint(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    order_gen: torch.Generator,
    record: RunRecord,
) -> None:
    """Put model, optimizer, RNGs and the record's epochs back to the checkpoint's epoch end; a version 1 checkpoint's
    losses into the record's batch_losses (they win over the run file's: the keeper moves them into the log)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    order_gen.set_state(state["order_rng"])
    record.epochs = [EpochRecord.model_validate(e) for e in state["epochs"]]
    if "batch_losses" in state:
        record.batch_losses = state["batch_losses"].tolist()


def checkpoint_steps(state: dict[str, Any]) -> int:
    """The run's step count (losses recorded) at the checkpoint's epoch end."""
    if "steps" in state:
        return int(state["steps"])
    return len(state["batch_losses"])
