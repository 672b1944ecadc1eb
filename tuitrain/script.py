"""The logging API: any PyTorch training script writes a run file that tuitrain watches, lists and compares.

    with tuitrain.init(label="lr=3e-4", config={"lr": 3e-4}) as run:
        ...
        run.log(loss)                                    # every training batch
        run.log_epoch(test_accuracy=acc, test_loss=tl)   # every epoch end

The file is the one preset runs write (tuitrain.records, written atomically), so `tuitrain watch`, the
home screen and `tuitrain compare` take it as they take a preset run. Like the engine's loop, `log` keeps
the loss tensors and reads them back in chunks (every `read_every` calls or READ_BACK_EVERY_S): `.item()`
on a GPU tensor waits for the GPU, and a script that waits once per batch trains slower.

This module imports neither the engine nor torch: torch is used only when the script has imported it
(a tensor loss means it has).
"""

from __future__ import annotations

import math
import numbers
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from tuitrain.catalog import new_invocation_dir, slug
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, ScriptInfo, utc_now, write_record

READ_EVERY = 50
"""Logged losses kept before they are read back together (one sync for the chunk)."""
READ_BACK_EVERY_S = 2.0
"""Losses are also read back when this long has passed since the last read-back (a slow model)."""
PERSIST_EVERY_S = 2.0
"""The run file is rewritten at most this often while training (and at every epoch end and the end)."""
DEFAULT_PRESET = "script"
"""The group a script run is listed under when init() names none."""


def _torch() -> Any | None:
    """torch if the script imported it; never imported here."""
    return sys.modules.get("torch")


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _environment() -> EnvInfo:
    torch = _torch()
    return EnvInfo(
        device="CPU",
        device_type="cpu",
        torch_version=getattr(torch, "__version__", "not imported"),
        threads=torch.get_num_threads() if torch is not None else os.cpu_count() or 1,
        python_version=platform.python_version(),
    )


def _spec(config: dict[str, Any], epochs: int | None, batch_size: int | None) -> RunSpec:
    """What a RunSpec can say of a script run: its epochs and batch size (for progress and throughput)."""
    bs = batch_size if batch_size is not None else config.get("batch_size")
    values: dict[str, Any] = {"epochs": epochs or 1}
    if isinstance(bs, int) and not isinstance(bs, bool):
        values["batch_size"] = bs
    lr = config.get("lr")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= 10:
        values["lr"] = float(lr)
    return RunSpec(**values)


def _check_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """config as stored: string keys; JSON scalars and short lists of them. A nested dict is flattened into
    'outer/inner' keys (as wandb shows them): {"optim": {"lr": 0.1}} is stored as {"optim/lr": 0.1}."""
    checked: dict[str, Any] = {}
    for name, value in config.items():
        if not isinstance(name, str):
            raise TypeError(f"tuitrain.init: config keys must be strings, got {prefix}{name!r}")
        key = prefix + name
        flat = _check_config(value, prefix=f"{key}/") if isinstance(value, dict) else {key: value}
        if clash := next((k for k in flat if k in checked), None):
            raise ValueError(f"tuitrain.init: config has {clash!r} twice (nested dicts are stored as 'a/b' keys)")
        if isinstance(value, dict):
            checked.update(flat)
            continue
        if isinstance(value, tuple):
            value = list(value)
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (str, bool, int, float)) for v in items):
            raise TypeError(f"tuitrain.init: config[{key!r}] must be a number, string, bool, None or a list of them")
        checked[key] = value
    return checked


def _scalar(name: str, value: Any) -> float:
    """A logged metric as a float; a tensor is read back here (once per epoch, not per batch)."""
    if _is_tensor(value):
        if value.numel() != 1:
            raise TypeError(f"log_epoch: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"log_epoch: {name} must be a number, got {type(value).__name__}")
    return float(value)


class Run:
    """One script run: its record, the losses logged since the last read-back, and when it last saved."""

    def __init__(
        self,
        label: str | None = None,
        config: dict[str, Any] | None = None,
        runs_dir: str | os.PathLike[str] = "runs",
        preset: str | None = None,
        epochs: int | None = None,
        batches_per_epoch: int | None = None,
        batch_size: int | None = None,
        read_every: int = READ_EVERY,
    ) -> None:
        config = _check_config(dict(config or {}))
        preset = preset or DEFAULT_PRESET
        label = label or Path(sys.argv[0] or "script").stem or "run"
        invocation, folder = new_invocation_dir(Path(runs_dir), preset)
        self.path = folder / f"01-{slug(label)}.json"
        """The run file."""
        self.planned_epochs = epochs
        """Epochs the script said it will train; None: open-ended."""
        self.read_every = max(1, int(read_every))
        script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else None
        self.record = RunRecord(
            id=f"{invocation}-01",
            preset=preset,
            invocation=invocation,
            label=label,
            spec=_spec(config, epochs, batch_size),
            env=_environment(),
            config=config,
            script=ScriptInfo(path=script, argv=list(sys.argv), cwd=os.getcwd()),
            run_index=0,
            run_count=1,
            batches_per_epoch=batches_per_epoch,
        )
        self._size_known()
        self.pending: list[Any] = []
        """Losses logged since the last read-back: floats, or tensors still on their device."""
        self.epoch_start = 0
        """Index in batch_losses of the first loss of the epoch in progress."""
        self.last_read = self.last_save = self.epoch_began = time.monotonic()
        self.finished = False
        self.diverged_at: str | None = None
        """Where the first non-finite loss was logged: the run ends 'diverged', as a preset run does."""
        self._save(always=True)

    # --- logging -------------------------------------------------------------------------------

    def log(self, loss: Any) -> None:
        """One training batch's loss: a float or a 0-d tensor (kept as it is, read back with the others later)."""
        if self.finished:
            raise RuntimeError("tuitrain: log() after the run finished")
        if _is_tensor(loss):
            if loss.device.type == "cuda" and self.record.env.device_type == "cpu":  # attributes: no sync
                self._on_gpu(loss)
            loss = loss.detach()  # not a sync; frees the autograd graph
        self.pending.append(loss)
        if len(self.pending) >= self.read_every or time.monotonic() - self.last_read >= READ_BACK_EVERY_S:
            self._read_back()

    def log_epoch(
        self,
        test_accuracy: Any,
        test_loss: Any = math.nan,
        *,
        test_total: int = 0,
        **metrics: Any,
    ) -> None:
        """Close an epoch: its test accuracy (percent) and test loss, and any other scalar by name (kept as an
        extra metric of the epoch). `test_total`: test images evaluated (for compare's noise estimate)."""
        if self.finished:
            raise RuntimeError("tuitrain: log_epoch() after the run finished")
        self._read_back()
        record = self.record
        losses = record.batch_losses[self.epoch_start :]
        accuracy = _scalar("test_accuracy", test_accuracy)
        now = time.monotonic()
        duration = now - self.epoch_began
        samples = len(losses) * record.spec.batch_size
        result = EpochRecord(
            epoch=len(record.epochs) + 1,
            initial_loss=losses[0] if losses else math.nan,
            final_loss=losses[-1] if losses else math.nan,
            mean_loss=sum(losses) / len(losses) if losses else math.nan,
            test_loss=_scalar("test_loss", test_loss),
            test_accuracy=accuracy,
            test_correct=round(accuracy * test_total / 100),
            test_total=test_total,
            duration_s=duration,
            eval_s=0.0,
            paused_s=0.0,
            samples_per_s=samples / duration if duration > 0 else 0.0,
            metrics={name: _scalar(name, value) for name, value in metrics.items()},
        )
        record.epochs.append(result)
        if record.batches_per_epoch is None and losses:
            record.batches_per_epoch = len(losses)  # the first epoch tells a watcher where epochs end
        if test_total:
            record.test_size = test_total
        self._size_known()
        if self.planned_epochs is None:
            record.spec.epochs = len(record.epochs) + 1  # open-ended: one more is always coming, until finish()
        self.epoch_start, self.epoch_began = len(record.batch_losses), now
        self._save(always=True)

    def finish(self, status: RunStatus = "completed", error: str | None = None) -> None:
        """End the run: read back what is left and save it with `status` (completed, failed, interrupted...).
        A second call does nothing."""
        if self.finished:
            return
        self.finished = True
        record = self.record
        try:
            self._read_back()
        except Exception as exc:  # noqa: BLE001 - a device that failed: those losses are gone, the rest is saved
            error = error or f"{type(exc).__name__}: {exc}"
            status = "failed"
        if self.planned_epochs is None:
            record.spec.epochs = max(len(record.epochs), 1)
        if status == "completed" and self.diverged_at is not None:
            status, error = "diverged", error or f"{self.diverged_at} (the script trained on)"
        record.status, record.ended_at = status, utc_now()
        if error is not None:
            record.error = error
        self._save(always=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.finish("completed")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("interrupted", "stopped by Ctrl-C")
        else:
            self.record.traceback = "".join(traceback.format_exception(kind, exc, tb))
            self.finish("failed", f"{type(exc).__name__}: {exc}")

    # --- inside --------------------------------------------------------------------------------

    def _read_back(self) -> None:
        """The pending losses into the record: all tensors in one stack and one read-back (one sync)."""
        self.last_read = time.monotonic()
        pending, self.pending = self.pending, []
        if not pending:
            return
        values: list[float] = [0.0] * len(pending)
        tensors = [i for i, v in enumerate(pending) if _is_tensor(v)]
        if tensors:
            torch = _torch()
            assert torch is not None
            stacked = torch.stack([pending[i].reshape(()).float() for i in tensors]).tolist()
            for i, value in zip(tensors, stacked):
                values[i] = value
        for i, v in enumerate(pending):
            if not _is_tensor(v):
                values[i] = float(v)
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None and self.diverged_at is None:
            batch = len(self.record.batch_losses) + bad - self.epoch_start + 1
            epoch = len(self.record.epochs) + 1
            self.diverged_at = f"non-finite loss ({values[bad]}) at epoch {epoch}, batch {batch}"
        self.record.batch_losses.extend(values)
        self._save()

    def _on_gpu(self, loss: Any) -> None:
        torch = _torch()
        assert torch is not None
        self.record.env.device_type = "cuda"
        self.record.env.device = torch.cuda.get_device_name(loss.device)

    def _size_known(self) -> None:
        record = self.record
        if record.batches_per_epoch:
            record.train_size = record.batches_per_epoch * record.spec.batch_size

    def _save(self, always: bool = False) -> None:
        """Write the run file, at most every PERSIST_EVERY_S unless `always`; a write that fails is tried again
        at the next save (the script trains on; its file keeps the last version written)."""
        now = time.monotonic()
        if not always and now - self.last_save < PERSIST_EVERY_S:
            return
        try:
            write_record(self.record, self.path)
        except OSError as exc:
            print(f"tuitrain: cannot write {self.path} ({exc.strerror or exc}); will try again", file=sys.stderr)
            return
        self.last_save = now


def init(
    label: str | None = None,
    config: dict[str, Any] | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    preset: str | None = None,
    epochs: int | None = None,
    batches_per_epoch: int | None = None,
    batch_size: int | None = None,
    read_every: int = READ_EVERY,
) -> Run:
    """Start a run that tuitrain can watch and compare; use it as a context manager, or call `run.finish()`.

    label: the run's name (default: the script's file name). config: free-form settings (JSON scalars and
    short lists; a nested dict becomes 'a/b' keys), compared as hyperparameters. runs_dir: where its folder
    goes. preset: the group it is listed under (default "script"). epochs: planned epochs (progress shows
    them; else open-ended).
    batches_per_epoch / batch_size: for progress and throughput before the first epoch ends (batch_size
    is also taken from config["batch_size"]). read_every: losses kept before one read-back.
    """
    return Run(label, config, runs_dir, preset, epochs, batches_per_epoch, batch_size, read_every)
