"""The training loop: fit(spec, sink, control) -> RunRecord.

In-memory data (airbench style): the whole dataset is one normalised tensor on the training
device and batches are slices of a seeded randperm. Losses stay on the device and are read back
every `spec.log_every` steps (nanoGPT: `.item()` is a sync point); finiteness is checked on the
device at the same points. The learning rate is set at each epoch's start from the spec's schedule
(RunSpec.lr_at, a function of the epoch: a resumed run continues its schedule from the checkpoint's
epoch); the training accuracy is counted on the device by the steps and read back at the epoch's end;
a validation split (RunSpec.val_split) is held out of the training images and evaluated with the test set.
The loop prints nothing and knows nothing of any UI: it reports
through events and records through a RecordKeeper (tuitrain.keeper, as scripts' runs are recorded): each read-back
appends its losses to the run's series log, and the run file (no losses in it) is saved every few seconds, at epoch
ends and at the end, wherever the keeper's RunFiles put them. An epoch's time is its training time (pauses
excluded) plus its evaluation: start-up, pauses and epoch-end saving are not training.
"""

from __future__ import annotations

import contextlib
import errno
import math
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tuitrain.core.atomic import atomic_write_bytes
from tuitrain.core.control import RunControl
from tuitrain.core.cores import CoreShare
from tuitrain.core.errors import RunFilesError
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    LogMessage,
    RunStarted,
    Sink,
)
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus
from tuitrain.keeper import LOSS_NAME, RecordKeeper, RunFiles
from tuitrain.records import EpochRecord, RunRecord, run_finished, utc_now
from tuitrain.train.checkpoint import (
    CheckpointWriter,
    WriteCheckpoint,
    checkpoint_state,
    checkpoint_steps,
    restore_checkpoint,
)
from tuitrain.train.cuda_step import autocast, make_step, wants_graph
from tuitrain.train.data import MnistArrays
from tuitrain.train.device import (
    TensorData,
    cpu_threads,
    cuda_index,
    describe_device,
    environment,
    prepare_model,
    select_device,
    usable_precision,
)
from tuitrain.train.evaluation import EvalCounts, Evaluation
from tuitrain.train.optim import load_optimizer_state, make_optimizer, set_lr

# Evaluation batch: on the CPU, batches of a few hundred images stay in cache and beat larger ones
# (measured: 500 about 2x faster than 10k for Model A/B); on a GPU, larger batches mean fewer launches.
EVAL_BATCH = {"cpu": 500, "cuda": 5000}
PERSIST_EVERY_S = 2.0
# Losses are also read back (and the run file saved) when this long has passed since the last
# read-back, so a slow model (e.g. resnet18 on a CPU) loses at most a few seconds to a kill -9.
READ_BACK_EVERY_S = 2.0

SEEDING_LOCK = threading.Lock()
"""Runs that start side by side in one process (executors.threads) seed torch and build their models one at a
time: torch's seed is global."""


def eval_batch(device: torch.device) -> int:
    return EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> tuple[float, int, int]:
    """Per-sample mean loss, correct count and total on (x, y) (evaluate_classes without the matrix)."""
    result = evaluate_classes(model, x, y, precision)
    return result.loss, result.correct, result.total


@torch.inference_mode()
def evaluate_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> Evaluation:
    """Per-sample mean loss, correct count, total and confusion matrix on (x, y), in large batches; sums and counts
    stay on the device and are read back once (no sync per batch)."""
    was_training = model.training
    model.eval()
    counts = EvalCounts(1, x.device)
    step = eval_batch(x.device)
    for start in range(0, x.shape[0], step):
        with autocast(x.device, precision):
            out = model(x[start : start + step])
        counts.add(out, y[start : start + step])
    model.train(was_training)
    return counts.read_back(int(x.shape[0]))[0]


def new_record(spec: RunSpec, device: torch.device, *, run_id: str, label: str, **extra) -> RunRecord:
    return RunRecord(id=run_id, label=label, spec=spec, env=environment(device), **extra)


def reopen_record(record: RunRecord, device: torch.device, *, from_checkpoint: bool) -> None:
    """Make a saved interrupted or crashed run's record live again in this process, to continue it: running, its
    end and error cleared, this process's environment (a live pid, not a crash), the resume time noted. Without a
    checkpoint to continue from, it starts over: its saved epochs and losses go, and the checkpoint it names (this
    life's first one is named once it is written)."""
    record.status, record.ended_at, record.error, record.traceback = "running", None, None, None
    record.env = environment(device)
    record.resumed_at.append(utc_now())
    if not from_checkpoint:
        record.epochs, record.batch_losses, record.checkpoint = [], [], None


@dataclass(frozen=True)
class RunPlace:
    """Where a run stands in its preset invocation and where its files go."""

    run_index: int = 0
    """0-based position of the run in its invocation."""
    run_count: int = 1
    """Runs in the invocation."""
    run_file: Path | None = None
    """The run file (named in RunStarted and RunFinished), written by the run's RunFiles; None when there is none."""
    checkpoint_file: Path | None = None
    """Where the epoch-end checkpoint is written; None: no checkpoints."""


def run_started(record: RunRecord, place: RunPlace, device: torch.device, start_epoch: int) -> RunStarted:
    """The RunStarted the engine emits for `record`'s run as it starts training at `start_epoch` on `device`: its
    spec and plan as set in its record as training begins, its place in its invocation."""
    assert record.train_size is not None and record.test_size is not None and record.batches_per_epoch is not None
    return RunStarted(
        run_id=record.id,
        label=record.label,
        run_index=place.run_index,
        run_count=place.run_count,
        spec=record.spec,
        device=describe_device(device),
        train_size=record.train_size,
        test_size=record.test_size,
        batches_per_epoch=record.batches_per_epoch,
        start_epoch=start_epoch,
        path=place.run_file,
        host=record.env.host,
        gpu=cuda_index(device),
        loss_series=record.loss_series or LOSS_NAME,  # the keeper logs the engine's losses under it
    )


def cannot_write(exc: OSError, folder: Path | None) -> RunFilesError:
    """A failed write of a run file or checkpoint, worded for the user: the folder, and why."""
    if folder is None and exc.filename:
        folder = Path(exc.filename).parent
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why = "the disk is full"
    elif folder is not None and not folder.is_dir():
        why = "the folder no longer exists"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "no permission to write there"
    elif exc.errno == errno.EROFS:
        why = "the file system is read-only"
    else:
        why = exc.strerror or str(exc)
    detail = f" ({exc.strerror})" if exc.strerror and exc.strerror != why else ""
    return RunFilesError(f"{folder or 'run folder'}: cannot write run files: {why}{detail}")


@dataclass
class EpochProgress:
    """One epoch's batch loop so far."""

    epoch: int
    losses: list[torch.Tensor] = field(default_factory=list)
    """One loss per trained batch, on the device (appending is cheaper than an indexed store)."""
    read: int = 0
    """losses[:read] are already on the host, recorded."""
    samples: int = 0
    """Training samples seen, as of the last read-back and at the end."""
    train_s: float = 0.0
    """Training time so far, pauses excluded (up to the last pause, and in full at the end)."""
    paused_s: float = 0.0
    """Seconds spent paused."""
    threads: list[int] = field(default_factory=list)
    """Thread counts trained with, in order (a new entry when the run's share of the cores changed)."""


class FitLoop:
    """One run's training, split like Lightning's fit loop and epoch loop: `run` (on_run_start, run_epochs,
    on_run_end, on_run_finished; leave_interrupted on a second stop signal), `run_epoch` (the batch loop),
    `read_back` (losses to the host, every log_every batches) and `end_epoch` (evaluate, record, checkpoint, save).
    Built by `fit` (keyword arguments only), which sets the thread count it starts with; `share`, when given, is
    asked at every batch boundary for the count to train with from then on (a core lease's share, capped at
    `max_threads`), and told when the run pauses."""

    def __init__(
        self,
        *,
        spec: RunSpec,
        emit: Sink,
        control: RunControl,
        files: RunFiles | None,
        checkpoints: CheckpointWriter,
        place: RunPlace,
        device: torch.device,
        data: MnistArrays | TensorData,
        record: RunRecord | None,
        resume: dict | None,
        share: CoreShare | None,
        max_threads: int,
    ) -> None:
        if isinstance(data, MnistArrays):
            data = TensorData.from_arrays(data, device, spec.subset, spec.test_subset, spec.dataset)
        data = data.split_validation(spec.val_split)
        self.requested_precision = spec.precision
        precision = usable_precision(spec.precision, device)
        spec = spec.model_copy(update={"data_source": data.source, "precision": precision})
        if record is None:
            record = new_record(spec, device, run_id=f"run-{int(time.time())}", label="run")
        record.spec = spec
        record.status = "running"
        self.share, self.max_threads, self.threads_now = share, max_threads, torch.get_num_threads()
        record.env.threads = self.follow_share()  # what the run starts with; the epochs record any change
        self.spec, self.emit, self.control, self.place = spec, emit, control, place
        self.checkpoints = checkpoints
        self.device, self.data, self.record = device, data, record

        with SEEDING_LOCK:
            torch.manual_seed(spec.seed)
            self.model = prepare_model(spec, device)
        self.order_gen = torch.Generator().manual_seed(spec.seed)
        self.graph = wants_graph(spec.model, device)
        self.optimizer = make_optimizer(spec, self.model.parameters(), capturable=self.graph)
        if resume is not None:
            load_optimizer_state(
                self.optimizer, lambda: restore_checkpoint(resume, self.model, self.optimizer, self.order_gen, record)
            )
        self.keeper = RecordKeeper(record, files, save_every_s=PERSIST_EVERY_S, strict=True, save_now=False)
        self.start_step = checkpoint_steps(resume) if resume is not None else 0
        """The run's losses before this life's first: its checkpoint's (a resume), else none."""

        self.n = int(data.train_x.shape[0])
        self.batches = math.ceil(self.n / spec.batch_size)
        if spec.limit_train_batches:
            self.batches = min(self.batches, spec.limit_train_batches)
        self.start_epoch = len(record.epochs) + 1
        # what RunStarted says, also in the file: a watcher in another process rebuilds the same events from it
        record.run_index, record.run_count, record.batches_per_epoch = place.run_index, place.run_count, self.batches
        record.train_size, record.test_size = min(self.n, self.batches * spec.batch_size), int(data.test_x.shape[0])

        self.status: RunStatus = "completed"
        """How the run ends, as far as training goes (the record's status is set when it ends)."""
        self.diverged_at: str | None = None
        self.active_s = 0.0
        """Training and evaluation time of the finished epochs (this process): what BatchLosses.elapsed_s adds to."""
        self.progress: EpochProgress | None = None
        self.last_read = time.monotonic()
        self.files_error: RunFilesError | None = None
        """Why the run's files could not be written (the run then ended as interrupted), raised as it ends."""

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Start the run, train its epochs, end it: RunFinished, then RunFilesError if its files could not be
        written. A second stop signal meanwhile leaves the run file saying interrupted, then propagates."""
        self.on_run_start()
        try:
            self.run_epochs()
            self.on_run_end()
        except BaseException:  # a second Ctrl-C or signal: leave now, but leave the file saying so
            self.leave_interrupted()
            raise
        self.on_run_finished()
        if self.files_error is not None:
            raise self.files_error
        return self.record

    def on_run_start(self) -> None:
        self.emit(run_started(self.record, self.place, self.device, self.start_epoch))

    def run_epochs(self) -> None:
        """Save the run file, then train the epochs until the last, a stop or a divergence (self.status says
        which). A run file that cannot be written ends the run as interrupted, an error as failed."""
        spec, emit = self.spec, self.emit
        try:
            with self.writing():
                self.keeper.start_at(self.start_step)  # a resume's log rewinds to its checkpoint (serieslog)
            self.save()
            self.model.train()
            # before capture: a captured step reads the lr tensor that each epoch's set_lr then writes in place
            set_lr(self.optimizer, spec.lr_at(self.start_epoch), on_device=self.graph)
            self.train_correct = torch.zeros((), dtype=torch.long, device=self.device)
            # after restore_checkpoint: a CUDA graph captures the optimizer state tensors in place
            self.train_step = make_step(
                self.model,
                self.optimizer,
                nn.CrossEntropyLoss(),
                self.data.train_x,
                self.data.train_y,
                spec.batch_size,
                graph=self.graph,
                precision=spec.precision,
                log=lambda text: emit(LogMessage(text)),
                correct=self.train_correct,
            )
            if self.requested_precision != spec.precision:
                emit(LogMessage(f"{self.requested_precision} needs a CUDA GPU that supports it; training in fp32."))
            for epoch in range(self.start_epoch, spec.epochs + 1):
                progress = self.run_epoch(epoch)
                if self.status != "completed":
                    break  # an unfinished epoch is not evaluated or recorded
                self.end_epoch(progress)
        except RunFilesError as exc:  # nowhere to save to: stop, resumable once the folder or disk is fixed
            self.status, self.record.error, self.files_error = "interrupted", str(exc), exc
        except Exception as exc:  # noqa: BLE001 - a failing run is recorded, not lost
            self.fail(exc)

    def on_run_end(self) -> None:
        """The run's end in its record: its status, the last losses and checkpoint, then the run file's last write."""
        record = self.record
        self.keep_unread_losses()
        if self.status == "completed" and self.diverged_at is not None:  # on_divergence = "continue"
            self.status = "diverged"
            record.error = f"{self.diverged_at}; training continued (on_divergence = continue)"
        with self.control.uninterrupted():  # a second stop signal now waits for these writes
            # the last checkpoint is on the disk before the run file says the run ended
            try:
                self.checkpoint_written(wait=True)
            except RunFilesError as exc:
                self.files_error = self.files_error or exc
                self.status, record.error = "interrupted", str(self.files_error)
            except Exception as exc:  # noqa: BLE001 - as a failure while training
                self.fail(exc)
            try:
                with self.writing():
                    self.keeper.finish(self.status)
            except RunFilesError as exc:  # the file keeps its last saved state; this process says why
                self.files_error = self.files_error or exc
                record.status, record.error = "interrupted", str(self.files_error)

    def leave_interrupted(self) -> None:
        """Leaving at once (a second stop signal): the run file says interrupted, as far as it can be written."""
        record = self.record
        with self.control.uninterrupted():
            if record.status == "running":
                self.keep_unread_losses()
                record.status, record.ended_at = "interrupted", utc_now()
                # leaving anyway: a checkpoint or run file that cannot be written keeps its last saved state
                with contextlib.suppress(Exception):
                    self.checkpoint_written(wait=True)
                with contextlib.suppress(Exception):
                    self.keeper.finish("interrupted")

    def on_run_finished(self) -> None:
        self.emit(run_finished(self.record, self.place.run_index, self.place.run_file))

    def fail(self, exc: Exception) -> None:
        """End the run as failed by `exc`, raised while training (its traceback kept)."""
        self.status = "failed"
        self.record.error = f"{type(exc).__name__}: {exc}"
        self.record.traceback = traceback.format_exc()

    # --- one epoch -------------------------------------------------------------------------------

    def run_epoch(self, epoch: int) -> EpochProgress:
        """Train one epoch's batches; stop at a batch boundary when asked (self.status says why); wait while
        paused, which is not training time."""
        control, step, bs, batches = self.control, self.train_step, self.spec.batch_size, self.batches
        log_every = self.spec.log_every
        progress = self.progress = EpochProgress(epoch)
        losses = progress.losses
        set_lr(self.optimizer, self.spec.lr_at(epoch), on_device=self.graph)
        self.train_correct.zero_()
        perm = torch.randperm(self.n, generator=self.order_gen).to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # the allocator's own counter: no sync
        samples = 0
        threads = progress.threads
        threads.append(self.follow_share())
        segment_start = time.perf_counter()
        for b in range(batches):
            if control.should_stop():
                self.status = "interrupted"
                break
            if control.paused.is_set():
                pause_start = time.perf_counter()
                progress.train_s += pause_start - segment_start
                if self.share is not None:
                    self.share.set_paused(True)
                try:
                    control.wait_while_paused(self.save)  # saving now and then: a long pause is not a crash
                finally:
                    if self.share is not None:
                        self.share.set_paused(False)
                segment_start = time.perf_counter()
                progress.paused_s += segment_start - pause_start
            if self.share is not None and self.follow_share() != threads[-1]:
                threads.append(self.threads_now)
            idx = perm[b * bs : (b + 1) * bs]
            losses.append(step(idx))
            samples += int(idx.shape[0])  # a shape, not a tensor value: no sync
            if (b + 1) % log_every == 0 or b + 1 == batches or time.monotonic() - self.last_read >= READ_BACK_EVERY_S:
                progress.samples = samples
                if not self.read_back(progress, segment_start):
                    break
        progress.train_s += time.perf_counter() - segment_start
        progress.samples = samples
        return progress

    def read_back(self, progress: EpochProgress, segment_start: float) -> bool:
        """Bring the losses trained since the last read-back to the host, record them (the keeper saves the run file
        every PERSIST_EVERY_S) and report them (BatchLosses). False when a non-finite loss stops the run."""
        record = self.record
        self.last_read = time.monotonic()
        batch = len(progress.losses)
        chunk = torch.stack(progress.losses[progress.read : batch])
        # checked on the device; with the read-back below, the only syncs of the whole chunk (every
        # log_every steps), never one per batch
        finite = bool(torch.isfinite(chunk).all())
        values = chunk.tolist()
        train_s = progress.train_s + (time.perf_counter() - segment_start)
        progress.read = batch
        with self.writing():  # appended to the series log; the run file saved every PERSIST_EVERY_S
            first_step = self.keeper.add_losses(values)
        assert record.train_size is not None  # set in __init__
        self.emit(
            BatchLosses(
                run_id=record.id,
                epoch=progress.epoch,
                first_step=first_step,
                losses=tuple(values),
                batch=batch,
                batches_per_epoch=self.batches,
                samples_done=progress.samples,
                train_size=record.train_size,
                samples_per_s=progress.samples / train_s if train_s > 0 else 0.0,
                elapsed_s=self.active_s + train_s,
                threads=self.threads_now if self.device.type == "cpu" else 0,
            )
        )
        if not finite and self.diverged_at is None:
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            self.diverged_at = (
                f"non-finite loss ({values[bad]}) at epoch {progress.epoch}, batch {batch - len(values) + bad + 1}"
            )
            if self.spec.on_divergence == "stop":
                self.status = "diverged"
                record.error = self.diverged_at
                return False
        return True

    def end_epoch(self, progress: EpochProgress) -> None:
        """Evaluate, record the epoch (its time: training plus evaluation), write the checkpoint and the run file,
        report EpochEnded."""
        record, place = self.record, self.place
        eval_start = time.perf_counter()
        test = evaluate_classes(self.model, self.data.test_x, self.data.test_y, self.spec.precision)
        test_loss, correct, total = test.loss, test.correct, test.total
        val: dict = {}
        if self.data.val_x is not None and self.data.val_y is not None:
            val_loss, val_correct, val_total = evaluate(
                self.model, self.data.val_x, self.data.val_y, self.spec.precision
            )
            val = {
                "val_loss": val_loss,
                "val_accuracy": 100.0 * val_correct / max(val_total, 1),
                "val_correct": val_correct,
                "val_total": val_total,
            }
        eval_s = time.perf_counter() - eval_start
        train_correct = int(self.train_correct.item())  # one read-back per epoch (evaluate has synced already)
        on_gpu = self.device.type == "cuda"
        epoch_losses = self.keeper.epoch_losses
        result = EpochRecord(
            epoch=progress.epoch,
            initial_loss=epoch_losses.first,
            final_loss=epoch_losses.last,
            mean_loss=epoch_losses.mean,
            test_loss=test_loss,
            test_accuracy=100.0 * correct / max(total, 1),
            test_correct=correct,
            test_total=total,
            duration_s=progress.train_s + eval_s,
            eval_s=eval_s,
            paused_s=progress.paused_s,
            samples_per_s=progress.samples / progress.train_s if progress.train_s else 0.0,
            threads=progress.threads,
            peak_gpu_memory_bytes=torch.cuda.max_memory_allocated(self.device) if on_gpu else None,
            lr=self.spec.lr_at(progress.epoch),
            train_accuracy=100.0 * train_correct / progress.samples if progress.samples else None,
            **val,
            confusion=test.confusion,
        )
        self.active_s += result.duration_s

        def checkpoint() -> None:
            if place.checkpoint_file is not None:
                self.checkpoint_written(wait=True)  # the previous epoch's: one write at a time
                state = checkpoint_state(self.model, self.optimizer, self.order_gen, record, self.keeper.step)
                self.checkpoints.start(place.checkpoint_file, state)
                self.checkpoint_written(wait=False)  # a synchronous write is done now, and the run file names it

        with self.writing():  # the epoch in the record, its checkpoint, then the run file saved
            self.keeper.end_epoch(lambda _losses, _s: result, checkpoint)
        self.emit(
            EpochEnded(
                run_id=record.id,
                label=record.label,
                run_index=place.run_index,
                epochs=self.spec.epochs,
                **result.event_fields(),
            )
        )

    def follow_share(self) -> int:
        """Train with the run's share of the cores from now on, if it changed (torch.set_num_threads works mid-run);
        returns the thread count in use."""
        if self.share is not None:
            wanted = min(self.share.threads(), self.max_threads)
            if wanted != self.threads_now:
                torch.set_num_threads(wanted)
                self.threads_now = wanted
        return self.threads_now

    # --- saving ----------------------------------------------------------------------------------

    def checkpoint_written(self, *, wait: bool) -> None:
        """Name the checkpoint in the record once its file is written (waiting for it when `wait`); RunFilesError
        when it could not be written. Until then the run file may be saved ahead of the checkpoint: a resume
        continues from the checkpoint's own epochs and losses, which the record is put back to."""
        if self.place.checkpoint_file is None:
            return
        try:
            written = self.checkpoints.collect(wait=wait)
        except OSError as exc:
            raise cannot_write(exc, self.place.checkpoint_file.parent) from exc
        if written is not None:
            self.record.checkpoint = written.name

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A block that writes the run's files: an OSError from them is a RunFilesError (the user's folder or disk)."""
        try:
            yield
        except OSError as exc:
            raise cannot_write(exc, self.place.run_file.parent if self.place.run_file else None) from exc

    def save(self) -> None:
        """Write the run file now; RunFilesError when it cannot be written."""
        with self.writing():
            self.keeper.save(always=True)

    def keep_unread_losses(self) -> None:
        """Record the losses of an epoch cut short between two read-backs (no event: the run is ending)."""
        progress = self.progress
        if progress is None or progress.read >= len(progress.losses):
            return
        unread, progress.read = progress.losses[progress.read :], len(progress.losses)
        try:
            values = torch.stack(unread).tolist()
        except Exception:  # noqa: BLE001 - a device that failed mid-run: those losses are gone, the rest is saved
            return
        with contextlib.suppress(OSError):  # a log that cannot take them: the run file says why it ended
            self.keeper.add_losses(values)


def fit(
    spec: RunSpec,
    sink: Sink | None = None,
    control: RunControl | None = None,
    *,
    data: MnistArrays | TensorData,
    record: RunRecord | None = None,
    files: RunFiles | None = None,
    place: RunPlace = RunPlace(),
    resume: dict | None = None,
    write_checkpoint: WriteCheckpoint | None = None,
    cores: CoreShare | None = None,
) -> RunRecord:
    """Train and evaluate one run, emitting events to `sink`; returns the finished record.

    The run is recorded through a RecordKeeper into `files` (keeper.LocalRunFiles: the run file and its series log
    here; None: nothing written, the losses kept in the record's batch_losses): each read-back's losses are appended
    to the series log, and the run file is saved at the start, at every epoch end, every few seconds while training
    and at the end. Errors inside training end the run as `failed` (the record says why); a user error such
    as an unavailable device is raised before anything starts. `place` says where the run stands in its
    invocation and where its files go: with a checkpoint file, a checkpoint is written there at every
    epoch end, by default in a background thread while the next epoch trains (the run file may be saved
    before it is on the disk; the next epoch end and the run's end wait for it), with `write_checkpoint(path,
    bytes)` in the training thread; `resume` (a state from checkpoint.load_checkpoint) continues from that
    epoch end.
    A KeyboardInterrupt (a second Ctrl-C) saves the run as interrupted and propagates; one arriving
    during the last save waits for it (RunControl.uninterrupted). A run file or checkpoint that cannot
    be written ends the run as interrupted (the record says why), then raises RunFilesError: the
    invocation cannot go on in that folder.

    `cores`, when given, is the run's share of the machine's cores (core.cores.CoreLease): asked at every batch
    boundary, it sets the thread count from then on, never above torch's default (the count before the run);
    each epoch records the counts it trained with. It is told when the run pauses, so that the paused run's
    cores go to the others meanwhile. TUITRAIN_CPU_THREADS overrides it.
    """
    device = select_device(spec.device)
    threads_before = torch.get_num_threads()
    autotune_before = torch.backends.cudnn.benchmark
    forced = cpu_threads(spec, device)
    share = None if forced is not None else cores
    try:
        torch.set_num_threads(forced or threads_before)
        if device.type == "cuda" and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True  # cuDNN picks the fastest kernels per shape (a few ms, once)
        loop = FitLoop(
            spec=spec,
            emit=sink or (lambda _e: None),
            control=control or RunControl(),
            files=files,
            # Only this process's own atomic write goes to the background: the worker's writer sends the bytes to
            # the invoking process, which writes the checkpoint before the run file sent after it, in order.
            checkpoints=CheckpointWriter(write_checkpoint, background=False)
            if write_checkpoint is not None
            else CheckpointWriter(atomic_write_bytes, background=True),
            place=place,
            device=device,
            data=data,
            record=record,
            resume=resume,
            share=share,
            max_threads=threads_before,
        )
        return loop.run()
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cudnn.benchmark = autotune_before
