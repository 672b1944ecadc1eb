"""Finding and reading saved run files: for the home screen, comparisons and watching.

Never writes to a run file. A file that cannot be read is reported with the reason, not raised.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuitrain.core.errors import RecordError, TuitrainError
from tuitrain.core.processes import pid_alive, process_start_time
from tuitrain.core.status import ShownStatus
from tuitrain.core.tfevents import is_event_file
from tuitrain.records import RunRecord, read_record
from tuitrain.tblogs import log_folders, read_log_folder

PLAN_FILE = "invocation.plan"
"""Beside the run files of a preset invocation: the runs it plans (JSON; not *.json, so never taken for a run)."""
TRASH_DIR = ".trash"
"""In a runs folder: where trashed runs go (tuitrain.housekeeping), under their path relative to the runs folder;
listings of the runs folder leave it out."""

# A running run rewrites its file at least every few seconds while batches complete; a slow model
# on a CPU can go longer between read-backs, so only a long silence counts as death on another host.
STALE_AFTER_S = 300.0


@dataclass
class RunFile:
    """One run file: its record, or why it could not be read."""

    path: Path
    record: RunRecord | None = None
    error: str | None = None

    @property
    def status(self) -> ShownStatus:
        """The record's status, 'crashed' for a run whose process is gone, or 'unreadable'."""
        if self.record is None:
            return "unreadable"
        return effective_status(self.record)


def training_process_alive(record: RunRecord) -> bool:
    """Is the process that wrote this record (on this host) still there, and the same process?"""
    pid = record.env.pid
    if not pid_alive(pid):
        return False
    started = process_start_time(pid)
    # a pid reused by a process that started after the run did is not the training process
    since = max([record.started_at, *record.resumed_at]).timestamp()  # a resumed run has a new process
    return started is None or started <= since + 1.0


def effective_status(record: RunRecord, now: datetime | None = None) -> ShownStatus:
    """The record's status, except that a 'running' record whose process is gone is 'crashed'.

    On this host the pid decides (dead, or reused by a younger process: crashed; alive: running, even if a
    long pause or evaluation kept the heartbeat old). From another host only the heartbeat can tell:
    silent for STALE_AFTER_S means crashed.
    """
    if record.status != "running":
        return record.status
    if record.env.host == socket.gethostname() and record.env.pid:
        return "running" if training_process_alive(record) else "crashed"
    now = now or datetime.now(timezone.utc)
    if (now - record.heartbeat_at).total_seconds() > STALE_AFTER_S:
        return "crashed"
    return "running"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60] or "run"


def new_invocation_dir(runs_dir: Path, preset_name: str) -> tuple[str, Path]:
    """A folder unique across processes: timestamp, preset name, random suffix, created exclusively."""
    for _ in range(10):
        invocation = f"{datetime.now():%Y%m%d-%H%M%S}-{slug(preset_name)}-{secrets.token_hex(3)}"
        folder = runs_dir / invocation
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return invocation, folder
        except FileExistsError:
            continue
    raise TuitrainError(f"{runs_dir}: could not create a unique run folder.")


def load_run_file(path: Path, series: bool = True) -> RunFile:
    """A run file read, with its series log unless `series` is False (a listing needs only the record); or a
    TensorBoard log folder (or one of its event files) read as a run."""
    path = Path(path)
    try:
        if is_event_file(path):
            path = path.parent
        if path.is_dir():
            return RunFile(path=path, record=read_log_folder(path))
        return RunFile(path=path, record=read_record(path, series=series))
    except RecordError as exc:
        return RunFile(path=path, error=str(exc))
    except TuitrainError as exc:
        if "google-crc32c" in str(exc):
            raise  # the reader cannot work here at all: one error for the command, not one per run
        return RunFile(path=path, error=str(exc))


def run_paths(folder: Path) -> list[Path]:
    """Run files under a folder (recursively), skipping temp files of atomic writes and the trash folder (unless
    it is the folder asked for), then the TensorBoard log folders under it (each a run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []

    def trashed(p: Path) -> bool:
        return TRASH_DIR in p.relative_to(folder).parts

    files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith(".") and not trashed(p))
    return files + [p for p in log_folders(folder) if p == folder or not trashed(p)]


def expand_arguments(args: Iterable[str]) -> list[Path]:
    """Files, folders (recursively) and glob patterns, in order, without duplicates."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            found.extend(run_paths(path))
        elif is_pattern(arg):
            found.extend(
                Path(p) for p in sorted(glob.glob(os.path.expanduser(arg), recursive=True)) if p.endswith(".json")
            )
        else:
            found.append(path)
    unique, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def scan_runs(runs_dir: Path, series: bool = True) -> list[RunFile]:
    """Every run file under runs_dir, newest first (unreadable ones by file time); their series logs read unless
    `series` is False."""
    files = [load_run_file(p, series) for p in run_paths(runs_dir)]

    def started(f: RunFile) -> float:
        if f.record is not None:
            return f.record.started_at.timestamp()
        try:
            return f.path.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(files, key=started, reverse=True)


def latest_invocation(runs_dir: Path) -> list[RunFile]:
    """The runs of the most recent preset invocation under runs_dir, in run order."""
    invocations = [
        (f, f.record.invocation)
        for f in scan_runs(runs_dir, series=False)
        if f.record is not None and f.record.invocation
    ]
    if not invocations:
        return []
    newest = invocations[0][1]
    chosen = sorted((f for f, invocation in invocations if invocation == newest), key=lambda f: f.path.name)
    return [load_run_file(f.path) for f in chosen]  # these with their series


def is_pattern(arg: str) -> bool:
    return any(ch in arg for ch in "*?[")


def refuse_nothing_readable(files: Sequence[RunFile], task: str) -> None:
    """TuitrainError (exit 2), each file's reason on its one line, where none of `files` is a readable run:
    `compare` and `report` have nothing to {task}."""
    if not any(f.record for f in files):
        listing = "; ".join((f.error or f"{f.path}: unreadable").rstrip(".") for f in files) or "no run files given"
        raise TuitrainError(f"nothing to {task}: {listing}.")


def unreadable_exit_code(files: Sequence[RunFile]) -> int:
    """The exit code of `compare --no-ui` and `report` once they have written what the readable runs say: 1 where
    some of the files could not be read (they are listed), else 0."""
    return 1 if any(f.record is None for f in files) else 0


def tagged_runs(args: Sequence[str], runs_dir: Path, tags: Sequence[str], task: str) -> list[RunFile]:
    """The readable runs named by `args` (no argument: every run under runs_dir) that carry every tag in `tags`;
    TuitrainError (exit 2) when none does."""
    files = load_run_arguments(list(args) or [str(runs_dir)], runs_dir)
    chosen = [f for f in files if f.record is not None and all(t in f.record.tags for t in tags)]
    if not chosen:
        where = ", ".join(args) if args else str(runs_dir)
        raise TuitrainError(f"nothing to {task}: no run in {where} is tagged {' and '.join(tags)}.")
    return chosen


def load_run_arguments(args: Iterable[str], runs_dir: Path) -> list[RunFile]:
    """The run files named by files, folders and glob patterns, read (never written).

    No argument means the runs of the latest preset invocation under runs_dir. A folder or pattern
    that holds no run file is listed as an unreadable entry saying so, rather than vanishing.
    """
    args = list(args)
    if not args:
        return latest_invocation(runs_dir)
    files: list[RunFile] = []
    seen: set[Path] = set()
    for arg in args:
        paths = expand_arguments([arg])
        if not paths:
            what = "pattern" if is_pattern(arg) else "folder"
            files.append(
                RunFile(path=Path(arg), error=f"{arg}: {what} holds no run file (*.json) or TensorBoard event file.")
            )
        for path in paths:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(load_run_file(path))
    return files
