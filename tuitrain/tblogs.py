"""TensorBoard logs as runs: each folder holding event files is one run, its scalars the run's series.

A log folder (Lightning's lightning_logs/version_N, Hugging Face's runs/<date>_<host>, any SummaryWriter's
log_dir) becomes a RunRecord built in memory, never written: its scalars as series (tuitrain.core.serieslog's
Series, as a script run's series log gives them), the last value of each in `summary`, the training loss (a tag
named like train/loss) as its loss series. TensorBoardRunReader tails the folder's event files by byte offset,
so a watcher decodes only what the writer appended since its last look.

The format has no end marker: a run is 'running' while the process named in its event file's name (this host)
is alive, or, for a file written elsewhere, while the file was written in the last IDLE_AFTER_S; else it
'completed' (a writer that died looks the same as one that finished).

Torch-free, no tensorboard package (tuitrain.core.tfevents decodes the files).
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tuitrain.core.errors import TuitrainError
from tuitrain.core.processes import pid_alive, process_start_time
from tuitrain.core.serieslog import Series, merge_chunks
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus
from tuitrain.core.tfevents import EventFileReader, is_event_file
from tuitrain.records import EnvInfo, RunRecord

PRESET = "tensorboard"
"""The group TensorBoard runs are listed under."""
IDLE_AFTER_S = 300.0
"""An event file written on another host, unchanged this long, is a run that ended (SummaryWriter flushes every
120 s by default, so a shorter wait would end live runs)."""
LOSS_TAGS = ("train/loss", "train_loss", "loss", "training_loss", "loss/train", "train/loss_step", "train_loss_step")
"""Tags taken as the training loss, in order of preference; else the first tag with 'loss' in its name that does
not name evaluation."""
_EVAL_WORDS = ("val", "eval", "test", "valid")
_WRITER = re.compile(r"^events\.out\.tfevents\.(?P<time>\d+)\.(?P<host>.+?)\.(?P<pid>\d+)\.\d+")
"""torch's and TensorFlow's event file names: time, host, pid, a counter (and maybe a suffix)."""


def event_files(folder: Path) -> list[Path]:
    """The event files directly in a folder, in the order written (their names start with the time)."""
    try:
        return sorted(p for p in Path(folder).iterdir() if is_event_file(p) and p.is_file())
    except OSError:
        return []


def log_folders(root: Path) -> list[Path]:
    """The folders under root (itself included) that hold event files: one run each, in path order."""
    root = Path(root)
    if root.is_file():
        return [root.parent] if is_event_file(root) else []
    try:
        return sorted({p.parent for p in root.rglob("events.out.tfevents.*") if is_event_file(p)})
    except OSError:
        return []


def is_log_folder(path: Path) -> bool:
    return Path(path).is_dir() and bool(event_files(path))


def loss_tag(tags: list[str]) -> str | None:
    """The tag that is the training loss, if one is."""
    lowered = {t.lower(): t for t in tags}
    for name in LOSS_TAGS:
        if name in lowered:
            return lowered[name]
    return next(
        (t for t in tags if "loss" in t.lower() and not any(w in t.lower() for w in _EVAL_WORDS)),
        None,
    )


def _writer(path: Path) -> tuple[str, int] | None:
    match = _WRITER.match(path.name)
    return (match["host"], int(match["pid"])) if match else None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class TensorBoardRunReader:
    """One log folder: its event files tailed by offset, the series read so far, and the record they make.

    Like follow's RunFileReader: read() gives the record when something changed, else None, and never raises (a
    file that cannot be read is counted in `failures`, its reason in `error`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.readers: dict[Path, EventFileReader] = {}
        self.series: dict[str, Series] = {}
        self.failures = 0
        self.error: str | None = None
        self.rewinds = 0
        """Always 0: event files' steps may repeat (they are not rewinds)."""
        self._status: RunStatus | None = None

    @property
    def label(self) -> str:
        """The folder and its parent: lightning_logs/version_0, runs/Dec04_18-00-00_host, logs/lr=0.1."""
        folder = self.folder.resolve()
        return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name

    def read(self) -> RunRecord | None:
        """The run's record if new points arrived or its status changed since the last call; None otherwise."""
        changed = False
        try:
            for path in event_files(self.folder):
                reader = self.readers.get(path)
                if reader is None:
                    reader = self.readers[path] = EventFileReader(path)
                points, restarted = reader.read_new()
                if restarted:
                    # a file rewritten from its start: read every file again, so that no point counts twice
                    self.readers, self.series = {}, {}
                    return self.read()
                if points:
                    chunk = {
                        tag: (np.asarray(p.steps, dtype=np.int64), np.asarray(p.values, dtype=np.float64))
                        for tag, p in points.items()
                    }
                    merge_chunks([chunk], self.series, rewind=False)
                    changed = True
        except TuitrainError as exc:
            self.failures += 1
            self.error = str(exc)
            if "google-crc32c" in str(exc):
                raise  # nothing to retry: the reader cannot work here
            return None
        except OSError as exc:
            self.failures += 1
            self.error = f"{self.folder}: cannot read ({exc.strerror or exc})."
            return None
        self.failures, self.error = 0, None
        status = self.status()
        if not changed and status == self._status:
            return None
        self._status = status
        return self.record(status)

    def status(self) -> RunStatus:
        """running while its writer is (this host: its process; else: written in the last IDLE_AFTER_S)."""
        files = list(self.readers)
        if not files:
            return "running"
        newest = files[-1]
        writer = _writer(newest)
        first = self.readers[newest].first_wall_time
        if writer is not None and writer[0] == socket.gethostname():
            started = process_start_time(writer[1])
            same = started is None or first is None or started <= first + 1.0  # not a later process with its pid
            return "running" if pid_alive(writer[1]) and same else "completed"
        try:
            age = time.time() - newest.stat().st_mtime
        except OSError:
            return "completed"
        return "running" if age < IDLE_AFTER_S else "completed"

    def record(self, status: RunStatus) -> RunRecord:
        readers = list(self.readers.values())
        firsts = [r.first_wall_time for r in readers if r.first_wall_time is not None]
        lasts = [r.last_wall_time for r in readers if r.last_wall_time is not None]
        started = _utc(min(firsts)) if firsts else datetime.now(timezone.utc)
        last = _utc(max(lasts)) if lasts else started
        writer = _writer(readers[-1].path) if readers else None
        tags = list(self.series)
        loss = loss_tag(tags)
        steps = len(self.series[loss]) if loss else 0
        folder = str(self.folder.resolve())
        record = RunRecord(
            id=f"tb-{hashlib.sha1(folder.encode()).hexdigest()[:12]}",
            status=status,
            preset=PRESET,
            invocation=None,
            label=self.label,
            # a log holds steps, not epochs or batch sizes: one open 'epoch' of all steps, a step per sample
            spec=RunSpec.model_validate({"epochs": 1, "batch_size": 1}),
            # pid 0: the status above is the reader's word (readers do not look for a pid of their own)
            env=EnvInfo(device="unknown", torch_version="unknown", host=writer[0] if writer else "", pid=0, threads=1),
            started_at=started,
            # the last liveness check while running (a quiet live run is not stale), else the last event
            heartbeat_at=datetime.now(timezone.utc) if status == "running" else last,
            ended_at=last if status != "running" else None,
            loss_series=loss,
            batches_per_epoch=max(steps, 1),
            train_size=max(steps, 1),
            config={k: v for r in readers for k, v in r.hparams.items()},
            summary={tag: float(s.values[-1]) for tag, s in self.series.items() if len(s)},
        )
        record.attach_series(self.series)
        if loss is not None:
            record.batch_losses = self.series[loss].values.tolist()
        return record


def read_log_folder(folder: Path) -> RunRecord:
    """The run of one log folder, read whole. TuitrainError (with the reason) if it cannot be read."""
    reader = TensorBoardRunReader(folder)
    record = reader.read()
    if record is None:
        raise TuitrainError(reader.error or f"{folder}: no TensorBoard event file.")
    return record
