"""The record-keeper: one way to record a run, for scripts' logging API and the engine's loop alike.

It holds a run's record (tuitrain.records) and its series log (tuitrain.core.serieslog). Logged values are kept as
they come (floats, or 0-d tensors still on their device) and read back in chunks: every `read_every` steps or
`read_every_s` seconds, all pending tensors in one stack and one `.tolist()` (one sync with the GPU, not one per
call). A read-back appends one frame to the series log; the JSON record (small: no per-step data) is rewritten at
most every `save_every_s`, at each epoch end and at the end. Nothing already written is rewritten, so a step costs
the same at step 10 and at step 10,000,000.

The engine (tuitrain.train) reads its losses back itself (stacked with its finiteness check: still one sync per
chunk) and hands the floats to `add_losses`; from there on its runs are recorded as scripts' are. Where the files go
is a RunFiles: written here (LocalRunFiles), or sent to the process that writes them (a worker's, train.worker).
A keeper without files keeps the training loss in the record's batch_losses (a run with no run file: tests,
benchmarks).

Torch-free: torch is used only when the caller has imported it (a tensor value means it has).
"""

from __future__ import annotations

import math
import numbers
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.serieslog import SeriesWriter, encode_chunk, frame, series_path_for
from tuitrain.core.status import RunStatus
from tuitrain.records import EpochRecord, RunRecord, record_text, utc_now

READ_EVERY = 50
"""Steps kept before their values are read back together (one sync for the chunk)."""
FLOATS_READ_EVERY = 1000
"""Steps of plain numbers kept before they are written (no device to wait for: larger frames, read faster)."""
READ_BACK_EVERY_S = 2.0
"""Values are also read back when this long has passed since the last read-back (a slow model)."""
PERSIST_EVERY_S = 2.0
"""The run file is rewritten at most this often while training (and at every epoch end and the end)."""
LOSS_NAME = "loss"
"""The series that `log(loss)` writes: the training loss."""
LOSS_PARTS = {"loss", "mse", "mae", "rmse", "nll"}
"""Name parts that make a series a loss."""
NOT_TRAINING = {"val", "valid", "validation", "test", "eval", "dev"}
"""Name parts that make a '...loss' series a held-out loss rather than the training loss."""


class TuitrainWarning(UserWarning):
    """Something a training script asked for that tuitrain does not do, or drops (said once per kind)."""


def torch_module() -> Any | None:
    """torch if the caller imported it; never imported here."""
    return sys.modules.get("torch")


_tensor_type: type | None = None


def is_tensor(value: Any) -> bool:
    global _tensor_type
    if _tensor_type is None:
        torch = torch_module()
        if torch is None:
            return False
        _tensor_type = torch.Tensor  # found once the caller has imported torch
    return isinstance(value, _tensor_type)


def is_training_loss(name: str) -> bool:
    """Whether a series named so is the training loss: 'loss', 'train/loss', 'train_mse'; not 'val_loss'."""
    parts = {p for p in re.split(r"[/_.\-\s]+", name.lower()) if p}
    return bool(LOSS_PARTS & parts) and not NOT_TRAINING & parts


def scalar(name: str, value: Any) -> float:
    """A value read now as a float (a tensor is read back here: for figures logged rarely, e.g. per epoch)."""
    if is_tensor(value):
        if value.numel() != 1:
            raise TypeError(f"tuitrain: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"tuitrain: {name} must be a number, got {type(value).__name__}")
    return float(value)


@dataclass
class EpochLosses:
    """The training-loss points of the epoch in progress: only what an EpochRecord says of them."""

    first: float = math.nan
    last: float = math.nan
    total: float = 0.0
    count: int = 0

    def add(self, values: list[float]) -> None:
        if not values:
            return
        if not self.count:
            self.first = values[0]
        self.last = values[-1]
        try:
            self.total += math.fsum(values)
        except ValueError:  # fsum refuses inf + -inf, whose sum is NaN
            self.total = math.nan
        self.count += len(values)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


class RunFiles(Protocol):
    """Where a keeper's run goes: its series log (frames appended) and its run file (written whole)."""

    @property
    def series_name(self) -> str:
        """The series log's file name, beside the run file (the record's series_file)."""

    def append(self, frame: bytes) -> None:
        """Append one frame (serieslog.frame) to the series log; OSError if it cannot be written."""

    def write(self, text: str) -> None:
        """Replace the run file with `text` (records.record_text), atomically; OSError if it cannot be written."""

    def close(self) -> None: ...


class LocalRunFiles:
    """A run file and its series log written by this process. The log is opened at its first append (or `open`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        """The run file; the series log is beside it."""
        self.series_name = series_path_for(self.path).name
        self.writer: SeriesWriter | None = None

    def open(self) -> SeriesWriter:
        """The series log, opened now if it is not yet (an existing one is appended to; its torn tail cut off)."""
        if self.writer is None:
            self.writer = SeriesWriter(self.path.parent / self.series_name)
        return self.writer

    def append(self, frame: bytes) -> None:
        self.open().append_frame(frame)

    def write(self, text: str) -> None:
        atomic_write_text(self.path, text)

    def close(self) -> None:
        """Close the log (a later append opens it again)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RecordKeeper:
    """Records one run: its per-step series (appended), its epochs, summary and status (the JSON record).

    `files`: a run file's path (written here), a RunFiles, or None (nothing written: the training loss is kept in
    record.batch_losses). `strict`: a write that fails raises its OSError (the engine ends the run on it) instead of
    being said with `on_error` while the run goes on (a script's run). `save_now`: save the run file at once."""

    def __init__(
        self,
        record: RunRecord,
        files: Path | RunFiles | None,
        *,
        read_every: int = READ_EVERY,
        read_every_s: float = READ_BACK_EVERY_S,
        save_every_s: float = PERSIST_EVERY_S,
        on_error: Callable[[str], None] | None = None,
        strict: bool = False,
        save_now: bool = True,
    ) -> None:
        self.record = record
        if isinstance(files, (str, Path)):
            local = LocalRunFiles(Path(files))
            local.open()  # a folder that cannot take the log is refused now, as the run starts
            files = local
        self.files: RunFiles | None = files
        self.read_every = max(1, int(read_every))
        self.read_every_s = read_every_s
        self.save_every_s = save_every_s
        self.on_error = on_error or (lambda text: print(text, file=sys.stderr))
        """How a failed write is said (the run trains on; its file keeps the last version written)."""
        self.strict = strict
        self.losses_inline = record.series_file is None and bool(record.batch_losses)
        """The record came with its losses inline (an older tuitrain's run file, resumed): start_at moves them."""
        if files is not None:
            record.series_file = files.series_name
        self.step = 0
        """The step the next values go to (wandb's: the row in progress)."""
        self.pending: dict[str, tuple[list[int], list[Any]]] = {}
        """Values logged since the last read-back, by name: their steps, and floats or tensors still on a device."""
        self.pending_steps = 0
        """Steps committed since the last read-back."""
        self.chunk = max(self.read_every, FLOATS_READ_EVERY)
        """Steps kept before a read-back: read_every while tensors are pending, more for plain numbers."""
        self.last: dict[str, float] = {}
        """The last value read back of each series (the summary's default)."""
        self.summary_set: dict[str, Any] = {}
        """Summary figures the script set itself; they win over `last`."""
        self.epoch_losses = EpochLosses()
        self.first_non_finite: int | None = None
        """Step of the first non-finite training loss: the run has diverged."""
        self.warned: set[str] = set()
        self.last_read = self.last_save = self.epoch_began = time.monotonic()
        self.finished = False
        if save_now:
            self.save(always=True)

    @property
    def path(self) -> Path | None:
        """The run file, where this process writes it."""
        return self.files.path if isinstance(self.files, LocalRunFiles) else None

    def start_at(self, step: int) -> None:
        """Go on from `step` (a resume from a checkpoint, or 0: trained again from the start): the next training loss
        is that step's, and its frame rewinds the log there (serieslog). A run file of an older tuitrain, with its
        losses inline, has them moved into the log first, as far as `step`."""
        record = self.record
        self.step = step
        record.loss_series = record.loss_series or LOSS_NAME
        inline = record.batch_losses[:step]
        if self.files is None:
            record.batch_losses = inline
        else:
            record.batch_losses = []  # the log holds them (JSON leaves them out once series_file is set)
            if self.losses_inline and inline:
                self.losses_inline = False
                self.add_points({record.loss_series: (range(len(inline)), inline)})
                # the epoch in progress starts at `step`; a divergence before it was the earlier life's to judge
                self.epoch_losses, self.first_non_finite = EpochLosses(), None
        record.steps_logged = step

    # --- logging -------------------------------------------------------------------------------

    def log(self, values: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """wandb's step semantics: no step means the step in progress, committed (the next call goes to the next
        step) unless commit=False; a step adds to that step, committed by a later step or commit=True; a step
        lower than the current one is dropped, with one warning."""
        if step is not None:
            if step < self.step:
                self.warn_once(
                    "lower step",
                    f"tuitrain: log(step={step}) is below the current step {self.step}; steps must increase, so "
                    "such values are dropped (said once)",
                )
                return
            if step > self.step:
                self.step = step
                self.pending_steps += 1
        at = self.step
        pending = self.pending
        for name, value in values.items():
            column = pending.get(name)
            if column is None:
                column = pending[name] = ([], [])
                self.check_name(name)
            column[0].append(at)
            column[1].append(value if type(value) is float else self.held(value))
        if commit or (commit is None and step is None):
            self.step = at + 1
            self.pending_steps += 1
        if self.pending_steps >= self.chunk or time.monotonic() - self.last_read >= self.read_every_s:
            self.read_back()

    def log_loss(self, loss: Any) -> None:
        """One training step's loss (`run.log(loss)`): the 'loss' series, next step."""
        column = self.pending.get(LOSS_NAME)
        if column is None:
            column = self.pending[LOSS_NAME] = ([], [])
            self.check_name(LOSS_NAME)
        column[0].append(self.step)
        column[1].append(loss if type(loss) is float else self.held(loss))
        self.step += 1
        self.pending_steps += 1
        if self.pending_steps >= self.chunk or time.monotonic() - self.last_read >= self.read_every_s:
            self.read_back()

    def held(self, value: Any) -> Any:
        """A logged value as kept until the read-back. A tensor in host memory is read now: no device to wait for,
        and a tensor changed in place later cannot change what was logged. A device's tensor is kept detached (no
        sync; its autograd graph freed now) and read back with the others in a small chunk."""
        if not is_tensor(value):
            return value
        if value.is_cpu:
            try:
                return float(value)
            except (RuntimeError, ValueError):  # not one element: refused, with its shape, at the read-back
                return value
        self.chunk = self.read_every
        return value.detach()

    def check_name(self, name: str) -> None:
        """A name logged for the first time: strings only; the first training-loss name becomes the loss series."""
        if not isinstance(name, str):
            raise TypeError(f"tuitrain: metric names must be strings, got {name!r}")
        if self.record.loss_series is None and is_training_loss(name):
            self.record.loss_series = name

    def define_metric(self, name: str, goal: str | None = None) -> None:
        if goal is not None:
            if goal not in ("min", "max", "minimize", "maximize"):
                raise ValueError(f"tuitrain: define_metric({name!r}, goal={goal!r}): goal is 'min' or 'max'")
            self.record.metric_goals[name] = "min" if goal.startswith("min") else "max"

    def set_summary(self, name: str, value: Any) -> None:
        self.summary_set[name] = value
        self.record.summary[name] = value

    def warn_once(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(message, TuitrainWarning, stacklevel=4)

    # --- epochs and the end --------------------------------------------------------------------

    def end_epoch(
        self, build: Callable[[EpochLosses, float], EpochRecord], settle: Callable[[], None] | None = None
    ) -> EpochRecord:
        """Close the epoch in progress: `build(its training losses, its seconds)` makes its record; `settle()` updates
        what the record says with it (the run's epochs); then it is saved."""
        self.read_back()
        now = time.monotonic()
        epoch = build(self.epoch_losses, now - self.epoch_began)
        self.record.epochs.append(epoch)
        self.epoch_losses, self.epoch_began = EpochLosses(), now
        if settle is not None:
            settle()
        self.save(always=True)
        return epoch

    def finish(self, status: RunStatus = "completed", error: str | None = None) -> None:
        """Read back what is left and save with `status` (a completed run that logged a non-finite training loss is
        diverged). A second call does nothing."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.pending:
                self.read_back()
        except Exception as exc:  # noqa: BLE001 - a device that failed: those values are gone, the rest is saved
            error = error or f"{type(exc).__name__}: {exc}"
            status = "failed"
        record = self.record
        if status == "completed" and self.first_non_finite is not None:
            status = "diverged"
            error = error or f"non-finite training loss ({record.loss_series}) at step {self.first_non_finite}"
        record.status, record.ended_at = status, utc_now()
        if error is not None:
            record.error = error
        try:
            self.save(always=True)
        finally:
            if self.files is not None:
                self.files.close()

    # --- inside --------------------------------------------------------------------------------

    def read_back(self) -> None:
        """The pending values as floats (every tensor in one stack per device: one sync), appended to the log."""
        self.last_read = time.monotonic()
        pending, self.pending = self.pending, {}
        self.pending_steps = 0
        self.chunk = max(self.read_every, FLOATS_READ_EVERY)
        if not pending:
            self.save()
            return
        columns = {name: (steps, self._floats(name, values)) for name, (steps, values) in pending.items()}
        self._tensors_to_floats(columns)
        self.add_points(columns)

    def add_losses(self, values: list[float]) -> int:
        """Training losses already read back (the engine's), one per step from the current one; the first's step."""
        first = self.step
        self.step += len(values)
        self.record.loss_series = self.record.loss_series or LOSS_NAME
        self.add_points({self.record.loss_series: (range(first, self.step), values)})
        return first

    def add_points(self, columns: Mapping[str, tuple[Sequence[int], list[float]]]) -> None:
        """Points read back, by series: appended to the log as one frame, taken into the record, saved when due."""
        record = self.record
        files = self.files
        if files is None:
            loss = columns.get(record.loss_series) if record.loss_series else None
            if loss is not None:
                record.batch_losses.extend(loss[1])
        else:
            try:
                files.append(frame(encode_chunk(columns)))
            except OSError as exc:
                if self.strict:
                    raise
                self.on_error(
                    f"tuitrain: cannot append to {files.series_name} ({exc.strerror or exc}); those steps are lost"
                )
        for name, (steps, values) in columns.items():
            if not values:
                continue
            record.steps_logged += len(values)
            self.last[name] = values[-1]
            if name == record.loss_series:
                self.epoch_losses.add(values)
                if self.first_non_finite is None:
                    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
                    if bad is not None:
                        self.first_non_finite = steps[bad]
        record.summary = {**self.last, **self.summary_set}
        self.save()

    def _floats(self, name: str, values: list[Any]) -> list[Any]:
        """Numbers as floats; tensors left for one stacked read-back; anything else refused here, at read-back."""
        out: list[Any] = []
        for value in values:
            if type(value) is float:
                out.append(value)
            elif is_tensor(value):
                if value.numel() != 1:
                    raise TypeError(f"tuitrain: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
                out.append(value)
            elif isinstance(value, numbers.Real) and not isinstance(value, bool) or isinstance(value, bool):
                out.append(float(value))
            else:
                self.warn_once(
                    f"type {type(value).__name__}",
                    f"tuitrain: {name}: a {type(value).__name__} is not a scalar; tuitrain keeps numbers and 0-d "
                    "tensors only, and ignores these (said once per type)",
                )
                out.append(None)
        return out

    def _tensors_to_floats(self, columns: dict[str, tuple[list[int], list[Any]]]) -> None:
        places: list[tuple[str, int]] = []
        tensors: list[Any] = []
        for name, (_, values) in columns.items():
            for i, value in enumerate(values):
                if value is not None and type(value) is not float:
                    places.append((name, i))
                    tensors.append(value)
        if tensors:
            torch = torch_module()
            assert torch is not None  # a tensor was logged, so torch is imported
            by_device: dict[Any, list[int]] = {}
            for k, tensor in enumerate(tensors):
                by_device.setdefault(tensor.device, []).append(k)
            self._device_seen(torch, next(iter(by_device)))
            for indices in by_device.values():
                group = [tensors[k] for k in indices]
                with torch.no_grad():
                    try:
                        stacked = torch.stack(group)  # 0-d tensors of one device: one stack, one read-back
                    except RuntimeError:  # shapes (1,) among (), dtypes that do not stack
                        stacked = torch.stack([t.reshape(()).double() for t in group])
                read = stacked.tolist()
                for k, value in zip(indices, read):
                    name, i = places[k]
                    columns[name][1][i] = value
        for name in list(columns):  # values that were not scalars: left out
            steps, values = columns[name]
            if any(v is None for v in values):
                kept = [(s, v) for s, v in zip(steps, values) if v is not None]
                if not kept:
                    del columns[name]
                    continue
                columns[name] = ([s for s, _ in kept], [v for _, v in kept])

    def _device_seen(self, torch: Any, device: Any) -> None:
        """The device of the values logged tells the record where the run trains (an attribute: no sync)."""
        env = self.record.env
        if device.type == "cuda" and env.device_type == "cpu":
            env.device_type = "cuda"
            env.device = torch.cuda.get_device_name(device)

    def save(self, always: bool = False) -> None:
        """Write the run file, at most every save_every_s unless `always`; a write that fails is tried again at the
        next save (strict: raises its OSError)."""
        now = time.monotonic()
        if self.files is None or not always and now - self.last_save < self.save_every_s:
            return
        try:
            self.files.write(record_text(self.record))
        except OSError as exc:
            if self.strict:
                raise
            self.on_error(f"tuitrain: cannot write {self.path} ({exc.strerror or exc}); will try again")
            return
        self.last_save = now
