"""What a worker that trains runs and the process that writes their run files say to each other.

A worker (a local process, or a Ray task) trains one run at a time with the engine and sends back everything
that is to be kept: events, run file contents, series log frames, checkpoints. The invoking process writes every
file, so there is one writer per file, and a worker needs no access to the runs folder. Small picklable
dataclasses, torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuitrain.core.events import Event
from tuitrain.core.spec import RunSpec


@dataclass(frozen=True)
class RunTask:
    """One run for a worker to train."""

    index: int
    """0-based position of the run in its invocation."""
    run_count: int
    run_id: str
    label: str
    spec: RunSpec
    preset: str
    invocation: str
    run_file: Path
    """The run file the invoking process writes (named in the run's events and its checkpoint's name)."""
    record_text: str | None = None
    """A resumed run's record as saved (None: a new run)."""
    checkpoint: bytes | None = None
    """A resumed run's checkpoint file (None: from epoch 1)."""
    gpu: int | None = None
    """CUDA device index to train on; None: as spec.device says."""


# --- worker -> invoking process ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerReady:
    """The worker started (imports done) and waits for data and tasks."""

    pid: int
    host: str


@dataclass(frozen=True)
class TaskEvent:
    """An engine event of the run in training."""

    index: int
    event: Event


@dataclass(frozen=True)
class RecordSaved:
    """The run file's new contents (records.record_text): to be written now, or written already (`written`)."""

    index: int
    text: str
    written: bool = False
    """The worker wrote it itself (a worker in the invoking process: the loop writes its own files)."""


@dataclass(frozen=True)
class SeriesAppended:
    """A frame for the run's series log (tuitrain.core.serieslog), to be appended now: one per read-back of the
    run's losses, sent before any RecordSaved that counts its steps."""

    index: int
    frame: bytes


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint's bytes, to be written (before the run file that names it) beside the run file."""

    index: int
    data: bytes


@dataclass(frozen=True)
class TaskDone:
    """The run ended (its last RecordSaved says how); the worker takes the next task."""

    index: int
    files_error: str | None = None
    """The run's files could not be written where the worker writes them itself (RunFilesError's message): the
    invocation cannot go on in that folder."""


@dataclass(frozen=True)
class TaskRefused:
    """The run could not start (e.g. its device is missing on the worker's machine): a one-line reason."""

    index: int
    error: str


# --- invoking process -> worker ----------------------------------------------------------------------


@dataclass(frozen=True)
class ControlState:
    """The controls of a running run, sent when they change."""

    index: int
    paused: bool
    stop_run: bool
    stop_all: bool


WorkerMessage = WorkerReady | TaskEvent | RecordSaved | SeriesAppended | CheckpointSaved | TaskDone | TaskRefused
