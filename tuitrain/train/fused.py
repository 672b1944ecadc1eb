"""Fused runs: runs of one sweep that share an architecture train as one batched program (stacked.StackedRuns),
each keeping what `fit` gives it alone: its own initial weights and data order (its seed), its own record, events,
controls, checkpoint and end.

`fit_fused(runs, data=...)` trains the runs (each a `FusedRun`: its spec, record, sink, control, run files and
place, as `fit` takes them) and returns their records; each run is recorded through its own RecordKeeper
(tuitrain.keeper), as `fit` records a run alone. The runs step together, one batch each per step; every
`log_every` batches (or READ_BACK_EVERY_S) the group's losses are read back in one go and handed to each run's sink
as its BatchLosses; at each epoch end the stack is evaluated in one pass and each run gets its EpochRecord, checkpoint
(in the same format as `fit` writes: `tuitrain --resume` continues a fused run alone), run file and EpochEnded.

A run leaves its group at a batch boundary, and the others go on unchanged: stopped (interrupted), diverged (a
non-finite loss with on_divergence = "stop"), or done (its own epoch count). A paused run is taken out into a group
of its own that waits; resumed, it trains on from where it was, its steps interleaved with the others'. A failure
inside a group's step (out of memory, say) fails that group's runs, each with its traceback. The caller decides
which runs fuse (stacked.fusion_key); this module trains what it is given.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from tuitrain.core.atomic import atomic_write_bytes
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RunFilesError
from tuitrain.core.events import BatchLosses, EpochEnded, LogMessage, Sink
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus
from tuitrain.keeper import EpochLosses, RecordKeeper, RunFiles
from tuitrain.records import EpochRecord, RunRecord, run_finished, utc_now
from tuitrain.train.checkpoint import CheckpointWriter, WriteCheckpoint, checkpoint_state
from tuitrain.train.device import TensorData, usable_precision
from tuitrain.train.loop import PERSIST_EVERY_S, READ_BACK_EVERY_S, RunPlace, cannot_write, eval_batch, run_started
from tuitrain.train.stacked import StackedRuns, fusion_key

PAUSED_HEARTBEAT_S = 30.0
"""A paused run's file is saved this often, so that a long pause is not taken for a crash (as RunControl's wait)."""


@dataclass
class FusedRun:
    """One run of a fused group, with what `fit` takes for it alone."""

    spec: RunSpec
    record: RunRecord
    sink: Sink = lambda _e: None
    control: RunControl = field(default_factory=RunControl)
    files: RunFiles | None = None
    """Where its run file and series log go, as fit's (None: nothing written)."""
    place: RunPlace = RunPlace()
    write_checkpoint: WriteCheckpoint | None = None
    """As fit's: None writes the checkpoint here (atomically)."""


@dataclass
class Member:
    """A run's own state while it trains in a group."""

    run: FusedRun
    order_gen: torch.Generator
    checkpoints: CheckpointWriter
    keeper: RecordKeeper
    perm: torch.Tensor | None = None
    status: RunStatus = "completed"
    """How it ends, as far as training goes (as FitLoop.status)."""
    diverged_at: str | None = None
    active_s: float = 0.0
    train_s: float = 0.0
    """This epoch's training time so far (pauses excluded)."""
    paused_s: float = 0.0
    paused_since: float | None = None
    files_error: RunFilesError | None = None

    @property
    def record(self) -> RunRecord:
        return self.run.record

    @property
    def spec(self) -> RunSpec:
        return self.run.spec

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A block that writes the run's files: an OSError from them is a RunFilesError, as in FitLoop.writing."""
        try:
            yield
        except OSError as exc:
            place = self.run.place
            raise cannot_write(exc, place.run_file.parent if place.run_file else None) from exc

    def save(self) -> None:
        with self.writing():
            self.keeper.save(always=True)


@dataclass
class Group:
    """Runs stepping together: their stack, and where they stand in the epoch (the same for all)."""

    stack: StackedRuns
    members: list[Member]
    epoch: int = 1
    batch: int = 0
    pending: list[torch.Tensor] = field(default_factory=list)
    """One (R,) tensor of losses per step since the last read-back, on the device."""
    last_read: float = field(default_factory=time.monotonic)


class FusedFit:
    """The loop over groups: see the module's docstring."""

    def __init__(self, runs: list[FusedRun], data: TensorData, device: torch.device) -> None:
        keys = {fusion_key(r.spec) for r in runs}
        if len(keys) != 1 or None in keys:
            raise ValueError("fit_fused: the runs must share one fusion key (stacked.fusion_key)")
        self.data, self.device = data, device
        self.n = int(data.train_x.shape[0])
        first = runs[0].spec
        self.batch_size = first.batch_size
        self.batches = math.ceil(self.n / first.batch_size)
        if first.limit_train_batches:
            self.batches = min(self.batches, first.limit_train_batches)
        self.log_every = min(r.spec.log_every for r in runs)
        members = []
        for run in runs:
            spec = run.spec.model_copy(
                update={"data_source": data.source, "precision": usable_precision(run.spec.precision, device)}
            )
            run.spec = spec
            record = run.record
            record.spec, record.status = spec, "running"
            record.env.threads = torch.get_num_threads()
            place = run.place
            record.run_index, record.run_count, record.batches_per_epoch = (
                place.run_index,
                place.run_count,
                self.batches,
            )
            record.train_size = min(self.n, self.batches * spec.batch_size)
            record.test_size = int(data.test_x.shape[0])
            writer = CheckpointWriter(run.write_checkpoint or atomic_write_bytes, background=False)
            keeper = RecordKeeper(record, run.files, save_every_s=PERSIST_EVERY_S, strict=True, save_now=False)
            members.append(Member(run, torch.Generator().manual_seed(spec.seed), writer, keeper))
        self.members = members
        self.groups = [self.build(members)]
        self.graphs = False
        """Whether groups step through a CUDA graph (captured again whenever a group's runs change)."""

    def capture(self, group: Group) -> None:
        """Capture `group`'s full-batch step as one CUDA graph when graphs are on; on failure, say so and go on
        eagerly (the fast path never fails a run)."""
        if not self.graphs or self.n < self.batch_size:
            return
        try:
            group.stack.capture(self.data.train_x, self.data.train_y, self.batch_size)
        except Exception as exc:  # noqa: BLE001
            self.graphs = False
            group.members[0].run.sink(
                LogMessage(
                    f"CUDA graph capture of the fused step failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    "training eagerly."
                )
            )

    def build(self, members: list[Member]) -> Group:
        """A group of fresh runs: each model built as `fit` builds it alone (its seed's initial weights)."""
        stack = StackedRuns([m.spec for m in members], self.device)
        return Group(stack, list(members))

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> list[RunRecord]:
        for m in self.members:
            self.started(m)
        labels = ", ".join(m.record.label for m in self.members)
        self.members[0].run.sink(LogMessage(f"Training {len(self.members)} runs fused in one program: {labels}"))
        try:
            for m in self.members:
                with m.writing():
                    m.keeper.start_at(0)
                m.save()
            for group in self.groups:
                self.capture(group)
            while self.groups:
                stepped = False
                for group in list(self.groups):
                    try:
                        stepped |= self.advance(group)
                    except RunFilesError as exc:  # the folder cannot take the run files: every run stops
                        self.stop_all_files(exc)
                    except Exception as exc:  # noqa: BLE001 - a failing group's runs are recorded, not lost
                        self.fail(group, exc)
                if not stepped and self.groups:
                    time.sleep(0.05)  # every run is paused
                    self.heartbeat()
        except BaseException:  # a second Ctrl-C or signal: leave now, but leave the files saying so
            for group in self.groups:
                for m in group.members:
                    with contextlib.suppress(Exception):
                        self.flush(group)
                    m.record.status, m.record.ended_at = "interrupted", utc_now()
                    with contextlib.suppress(Exception):
                        m.keeper.finish("interrupted")
            raise
        failed = next((m.files_error for m in self.members if m.files_error is not None), None)
        if failed is not None:
            raise failed
        return [m.record for m in self.members]

    def advance(self, group: Group) -> bool:
        """One step of `group` (after taking stopped and paused runs out of it); False when it did not step."""
        self.take_out_stopped_and_paused(group)
        if not group.members or all(m.paused_since is not None for m in group.members):
            return False
        if group.batch == 0:
            for m in group.members:
                m.perm = torch.randperm(self.n, generator=m.order_gen).to(self.device, non_blocking=True)
                m.train_s = m.paused_s = 0.0
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
        bs, b = self.batch_size, group.batch
        idx = torch.stack([m.perm[b * bs : (b + 1) * bs] for m in group.members if m.perm is not None])
        start = time.perf_counter()
        group.pending.append(group.stack.step(self.data.train_x, self.data.train_y, idx))
        group.batch += 1
        due = (
            group.batch % self.log_every == 0
            or group.batch == self.batches
            or time.monotonic() - group.last_read >= READ_BACK_EVERY_S
        )
        if due:
            self.read_back(group, start)  # the sync: where a GPU's time shows
        elapsed = time.perf_counter() - start
        for m in group.members:
            m.train_s += elapsed
        if group.batch == self.batches and group.members:
            self.end_epoch(group)
        return True

    def take_out_stopped_and_paused(self, group: Group) -> None:
        stopped = [m for m in group.members if m.run.control.should_stop()]
        if stopped:
            for m in stopped:
                m.status = "interrupted"
            self.read_back(group)
        now = time.perf_counter()
        for m in group.members:
            paused = m.run.control.paused.is_set()
            if paused and m.paused_since is None:
                m.paused_since = now
            elif not paused and m.paused_since is not None:
                m.paused_s += now - m.paused_since
                m.paused_since = None
        waiting = [m for m in group.members if m.paused_since is not None]
        if waiting and len(waiting) < len(group.members):
            self.read_back(group)
            waiting = [m for m in waiting if m in group.members]
            for m in waiting:  # each into a group of its own, where it was: it goes on alone when resumed
                self.split(group, m)

    def heartbeat(self) -> None:
        for group in self.groups:
            for m in group.members:
                if m.paused_since is not None and time.monotonic() - m.keeper.last_save >= PAUSED_HEARTBEAT_S:
                    m.save()

    # --- members leaving ---------------------------------------------------------------------

    def split(self, group: Group, member: Member) -> None:
        position = group.members.index(member)
        alone = copy.copy(group.stack)
        alone.keep([position])
        rest = [i for i in range(len(group.members)) if i != position]
        group.stack.keep(rest)
        group.members = [group.members[i] for i in rest]
        self.capture(group)
        self.groups.append(Group(alone, [member], epoch=group.epoch, batch=group.batch))
        self.capture(self.groups[-1])

    def leave(self, group: Group, leaving: list[Member]) -> None:
        """Take `leaving` out of `group` (its losses already read back) and end their runs."""
        if not leaving:
            return
        for m in leaving:
            self.finish(group, m)
        kept = [i for i, m in enumerate(group.members) if m not in leaving]
        group.members = [group.members[i] for i in kept]
        if not group.members:
            self.groups.remove(group)
            return
        group.stack.keep(kept)
        self.capture(group)

    def finish(self, group: Group, m: Member) -> None:
        """End `m`'s run: its final status in the record, the record saved, RunFinished."""
        record = m.record
        if m.status == "completed" and m.diverged_at is not None:  # on_divergence = "continue"
            m.status = "diverged"
            record.error = f"{m.diverged_at}; training continued (on_divergence = continue)"
        if m.files_error is None:
            try:
                with m.writing():
                    m.keeper.finish(m.status)
            except RunFilesError as exc:
                m.files_error = exc
                record.status, record.error = "interrupted", str(exc)
        else:
            record.status, record.ended_at = m.status, utc_now()
            with contextlib.suppress(OSError):
                m.keeper.finish(m.status)  # its files are closed; the run file is left as last saved
        m.run.sink(run_finished(record, m.run.place.run_index, m.run.place.run_file))

    def fail(self, group: Group, exc: Exception) -> None:
        text, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        with contextlib.suppress(Exception):
            self.flush(group)
        for m in group.members:
            m.status = "failed"
            m.record.error, m.record.traceback = text, trace
        self.leave(group, list(group.members))

    def stop_all_files(self, exc: RunFilesError) -> None:
        for group in list(self.groups):
            with contextlib.suppress(Exception):
                self.flush(group)
            for m in group.members:
                m.status, m.record.error, m.files_error = "interrupted", str(exc), exc
            self.leave(group, list(group.members))

    # --- read-back and epoch end ---------------------------------------------------------------

    def read_back(self, group: Group, step_start: float | None = None) -> None:
        """Read the group's losses back (flush), then end the runs that stop here (stopped, diverged)."""
        self.flush(group, step_start)
        self.leave(group, [m for m in group.members if m.status != "completed"])

    def flush(self, group: Group, step_start: float | None = None) -> None:
        """The group's losses since the last read-back to the host (one sync), into each run's record and sink; a run
        with a non-finite loss and on_divergence = "stop" is marked diverged (it leaves at the caller's next step)."""
        group.last_read = time.monotonic()
        if not group.pending:
            return
        chunk = torch.stack(group.pending)  # (steps, R)
        group.pending = []
        columns = chunk.T.tolist()
        running = time.perf_counter() - step_start if step_start is not None else 0.0
        for m, values in zip(group.members, columns, strict=True):
            record = m.record
            with m.writing():  # appended to its series log; its run file saved every PERSIST_EVERY_S
                first_step = m.keeper.add_losses(values)
            samples = min(group.batch * self.batch_size, self.n)
            assert record.train_size is not None
            m.run.sink(
                BatchLosses(
                    run_id=record.id,
                    epoch=group.epoch,
                    first_step=first_step,
                    losses=tuple(values),
                    batch=group.batch,
                    batches_per_epoch=self.batches,
                    samples_done=samples,
                    train_size=record.train_size,
                    samples_per_s=samples / (m.train_s + running) if m.train_s + running > 0 else 0.0,
                    elapsed_s=m.active_s + m.train_s + running,
                    threads=torch.get_num_threads() if self.device.type == "cpu" else 0,
                )
            )
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None and m.diverged_at is None:
                step = group.batch - len(values) + bad + 1
                m.diverged_at = f"non-finite loss ({values[bad]}) at epoch {group.epoch}, batch {step}"
                if m.spec.on_divergence == "stop":
                    m.status, record.error = "diverged", m.diverged_at

    def end_epoch(self, group: Group) -> None:
        """Evaluate the group's runs in one pass; each gets its EpochRecord, checkpoint, run file and EpochEnded.
        Runs that have trained their epochs leave."""
        eval_start = time.perf_counter()
        tests = group.stack.evaluate(self.data.test_x, self.data.test_y, eval_batch(self.device))
        eval_s = time.perf_counter() - eval_start
        on_gpu = self.device.type == "cuda"
        samples = min(self.batches * self.batch_size, self.n)
        for position, m in enumerate(group.members):
            record = m.record
            epoch_losses = m.keeper.epoch_losses
            result = EpochRecord(
                epoch=group.epoch,
                initial_loss=epoch_losses.first,
                final_loss=epoch_losses.last,
                mean_loss=epoch_losses.mean,
                test_loss=tests[position].loss,
                test_accuracy=100.0 * tests[position].correct / max(tests[position].total, 1),
                test_correct=tests[position].correct,
                test_total=tests[position].total,
                duration_s=m.train_s + eval_s,
                eval_s=eval_s,
                paused_s=m.paused_s,
                samples_per_s=samples / m.train_s if m.train_s else 0.0,
                threads=[torch.get_num_threads()] if not on_gpu else [],
                peak_gpu_memory_bytes=torch.cuda.max_memory_allocated(self.device) if on_gpu else None,
                lr=m.spec.lr_at(group.epoch),  # constant: a run with a schedule does not fuse (stacked.fusable)
                confusion=tests[position].confusion,
            )
            m.active_s += result.duration_s
            place = m.run.place
            with m.writing():  # the epoch in the record, its checkpoint, then the run file saved
                m.keeper.end_epoch(
                    functools.partial(built, result), functools.partial(self.checkpoint, group, position, m)
                )
            m.run.sink(
                EpochEnded(
                    run_id=record.id,
                    label=record.label,
                    run_index=place.run_index,
                    epochs=m.spec.epochs,
                    **result.event_fields(),
                )
            )
        group.batch = 0
        self.leave(group, [m for m in group.members if group.epoch >= m.spec.epochs])
        group.epoch += 1

    def checkpoint(self, group: Group, position: int, m: Member) -> None:
        """Write `m`'s checkpoint (it trains at `position` of `group`'s stack) and name it in its record."""
        place = m.run.place
        if place.checkpoint_file is None:
            return
        model, optimizer = group.stack.unstack(position)
        m.checkpoints.start(
            place.checkpoint_file, checkpoint_state(model, optimizer, m.order_gen, m.record, m.keeper.step)
        )
        try:
            written = m.checkpoints.collect(wait=True)
        except OSError as exc:
            raise cannot_write(exc, place.checkpoint_file.parent) from exc
        if written is not None:
            m.record.checkpoint = written.name

    def started(self, m: Member) -> None:
        m.run.sink(run_started(m.record, m.run.place, self.device, 1))


def built(result: EpochRecord, _losses: EpochLosses, _seconds: float) -> EpochRecord:
    """An epoch's record made already (keeper.end_epoch's `build`)."""
    return result


def fit_fused(runs: list[FusedRun], *, data: TensorData, graphs: bool | None = None) -> list[RunRecord]:
    """Train `runs` (fresh runs with one fusion key) as one fused group on `data`'s device; their records, in order.

    `graphs`: step through one CUDA graph per group (default: on a GPU unless TUITRAIN_CUDA_GRAPHS=0); a failed
    capture is reported and the runs train eagerly. A run file or checkpoint that cannot be written ends every run
    as interrupted, then raises RunFilesError, as `fit` does."""
    from tuitrain.train.cuda_step import graphs_enabled

    device = data.train_x.device
    loop = FusedFit(runs, data, device)
    loop.graphs = (device.type == "cuda" and graphs_enabled()) if graphs is None else graphs
    return loop.run()
