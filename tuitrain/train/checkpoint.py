"""Epoch-end checkpoints beside the run file, for `tuitrain --resume`.

A checkpoint holds what continuing needs to give the same batch losses as an uninterrupted run
(on the CPU): model and optimizer state, the global torch RNG (CUDA too), the batch-order
generator, and the run's completed epochs and batch losses up to that epoch end (so a crash
between writing the checkpoint and the run file loses nothing). Serialised in memory, then written
atomically; read with torch.load(weights_only=True): plain tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuitrain.core.errors import RecordError
from tuitrain.records import EpochRecord, RunRecord

CHECKPOINT_VERSION = 1
SUFFIX = ".ckpt.pt"


def checkpoint_path(run_path: Path) -> Path:
    """`01-lr=0.01.json` -> `01-lr=0.01.ckpt.pt` in the same folder."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.stem + SUFFIX)


def checkpoint_bytes(
    model: nn.Module, optimizer: torch.optim.Optimizer, order_gen: torch.Generator, record: RunRecord
) -> bytes:
    """The checkpoint as its file holds it. Serialised in memory, then written: torch.save writing to a full disk
    fails with an opaque "unexpected pos" RuntimeError, while writing the bytes raises the OSError (ENOSPC) that says
    what happened."""
    state: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "run_id": record.id,
        "epoch": len(record.epochs),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "order_rng": order_gen.get_state(),
        "epochs": [e.model_dump() for e in record.epochs],
        # float64 holds every float32 loss exactly
        "batch_losses": torch.tensor(record.batch_losses, dtype=torch.float64),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


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
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise RecordError(f"{path}: not a tuitrain checkpoint of version {CHECKPOINT_VERSION}.")
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
    """Put model, optimizer, RNGs and the record's epochs/losses back to the checkpoint's epoch end."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    order_gen.set_state(state["order_rng"])
    record.epochs = [EpochRecord.model_validate(e) for e in state["epochs"]]
    record.batch_losses = state["batch_losses"].tolist()
