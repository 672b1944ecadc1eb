"""Run housekeeping: trash and restore runs, rename a run's label, tag it, write a note on it.

Trashed runs move, with their companions (checkpoint, series log), to TRASH_DIR in the runs folder, under their path
relative to it: restoring moves them back. Trashing the last run of an invocation folder moves the whole folder
(its plan, lock and log too), so that no empty invocation is left for resume or compare to find.

A live run is never touched: not one whose process is alive, nor one in an invocation folder whose lock another
process holds (it trains or resumes the folder and writes its files). The folder's lock is held while its files
move or a run file is rewritten, so that no resume starts meanwhile. Edits rewrite the run file atomically and
change only what they say (the settings, figures and heartbeat stay as they were).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuitrain.catalog import TRASH_DIR, RunFile, effective_status, load_run_file, run_paths
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.errors import RecordError, TuitrainError
from tuitrain.core.folder_lock import LOCK_FILE
from tuitrain.core.serieslog import SERIES_SUFFIX
from tuitrain.records import RunRecord, read_record, record_text

CHECKPOINT_SUFFIX = ".ckpt.pt"
"""A run's checkpoint beside its file (tuitrain.train.checkpoint names it so; not imported: that module is torch's)."""
MAX_LABEL = 200
"""Longest label accepted (a label is one line shown in tables)."""


@dataclass
class TrashedRun:
    """A run in the trash: where it lies there, and where a restore puts it back."""

    trashed: Path
    original: Path
    record: RunRecord | None
    error: str | None = None


def trash_folder(runs_dir: Path) -> Path:
    return Path(runs_dir) / TRASH_DIR


def companions(path: Path, record: RunRecord | None) -> list[Path]:
    """A run file and the files beside it that belong to it (its checkpoint, its series log), those that exist."""
    names = [path.name, path.stem + CHECKPOINT_SUFFIX, path.stem + SERIES_SUFFIX]
    if record is not None:
        names += [n for n in (record.checkpoint, record.series_file) if n]
    unique = list(dict.fromkeys(names))
    return [path.parent / n for n in unique if (path.parent / n).is_file()]


def live_reason(run: RunFile) -> str | None:
    """Why a run is live (its process trains it), or None."""
    if run.record is not None and effective_status(run.record) == "running":
        return f"it is training (pid {run.record.env.pid} on {run.record.env.host})"
    return None


@contextmanager
def folder_held(folder: Path) -> Iterator[None]:
    """Hold an invocation folder's lock (where it has one) while its files change; TuitrainError naming the holder
    when another process holds it (it trains or resumes these runs)."""
    lock_path = Path(folder) / LOCK_FILE
    if not lock_path.is_file():
        yield
        return
    try:
        lock = open(lock_path, "r+", encoding="utf-8")  # noqa: SIM115 - held across the yield
    except OSError as exc:
        raise TuitrainError(f"{folder}: cannot open its lock ({exc.strerror or exc}); nothing changed.") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = lock.read().strip() or "pid unknown"
            raise TuitrainError(
                f"{folder}: is live: another tuitrain ({holder}) trains or resumes its runs; wait for it to end or "
                "stop it. Nothing changed."
            ) from None
        yield
    finally:
        lock.close()


def _runs_named(args: Sequence[str | Path]) -> list[RunFile]:
    """The run files that arguments name (files, or folders of them), read without their series; TuitrainError for
    an argument that names none or a run that cannot be read."""
    found: list[RunFile] = []
    seen: set[Path] = set()
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            paths = [p for p in run_paths(path) if p.is_file()]
            if not paths:
                raise TuitrainError(f"{arg}: folder holds no run file (*.json).")
        elif path.is_file():
            paths = [path]
        else:
            raise TuitrainError(f"{arg}: no such run file or folder.")
        for p in paths:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append(load_run_file(p, series=False))
    return found


def _relative(path: Path, root: Path, what: str) -> Path:
    try:
        return path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        raise TuitrainError(f"{path}: not under the {what} {root}; pass --runs-dir with the folder it is in.") from None


def _run_files_left(folder: Path) -> bool:
    return any(not p.name.startswith(".") for p in folder.glob("*.json"))


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)  # same file system (the trash is inside the runs folder): atomic, nothing copied


def _prune(folder: Path, stop: Path) -> None:
    """Remove empty folders from `folder` up to (not including) `stop`."""
    folder, stop = folder.resolve(), stop.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def trash_runs(args: Sequence[str | Path], runs_dir: Path) -> list[TrashedRun]:
    """Move the runs that `args` name, with their companions, into the runs folder's trash; all or nothing is
    checked first (each readable, under runs_dir, not live, not already in the trash); the runs moved."""
    runs_dir = Path(runs_dir)
    trash = trash_folder(runs_dir)
    runs = _runs_named(args)
    plans: list[tuple[RunFile, Path]] = []
    for run in runs:
        relative = _relative(run.path, runs_dir, "runs folder")
        if relative.parts and relative.parts[0] == TRASH_DIR:
            raise TuitrainError(f"{run.path}: is already in the trash.")
        if run.record is None:
            raise TuitrainError(f"{run.error}; move it by hand if it is not a run.")
        reason = live_reason(run)
        if reason is not None:
            raise TuitrainError(f"{run.path}: is live: {reason}; stop it first. Nothing changed.")
        for part in companions(run.path, run.record):
            if (trash / relative.parent / part.name).exists():
                raise TuitrainError(
                    f"{run.path}: the trash already holds {trash / relative.parent / part.name}; restore or delete "
                    "that one first. Nothing changed."
                )
        plans.append((run, relative))
    folders = sorted({run.path.parent.resolve() for run, _ in plans})
    trashed: list[TrashedRun] = []
    with ExitStack() as stack:
        for folder in folders:  # every folder held before anything moves: a live one refuses the whole command
            stack.enter_context(folder_held(folder))
        for run, relative in plans:
            for part in companions(run.path, run.record):
                _move(part, trash / relative.parent / part.name)
            trashed.append(TrashedRun(trash / relative, run.path, run.record))
        for folder in folders:
            if folder != runs_dir.resolve() and not _run_files_left(folder):
                # the invocation's last run: its plan, lock and log follow, and the empty folder goes
                into = trash / folder.relative_to(runs_dir.resolve())
                for entry in sorted(folder.iterdir()):
                    if not (into / entry.name).exists():
                        _move(entry, into / entry.name)
                _prune(folder, runs_dir)
    return trashed


def trashed_runs(runs_dir: Path) -> list[TrashedRun]:
    """The runs in the runs folder's trash, in path order."""
    trash = trash_folder(runs_dir)
    found = []
    for path in run_paths(trash):
        if not path.is_file():
            continue
        run = load_run_file(path, series=False)
        found.append(TrashedRun(path, Path(runs_dir) / path.relative_to(trash), run.record, run.error))
    return found


def restore_runs(args: Sequence[str | Path], runs_dir: Path) -> list[TrashedRun]:
    """Move trashed runs back where they were, with their companions (and, into a folder that is gone, the plan,
    lock and log that were trashed with it). `args` name runs in the trash or where they were; all are checked
    before any moves (each in the trash, nothing there now to overwrite)."""
    runs_dir = Path(runs_dir)
    trash = trash_folder(runs_dir)
    in_trash = {t.trashed.resolve(): t for t in trashed_runs(runs_dir)}
    chosen: dict[Path, TrashedRun] = {}
    for arg in args:
        path = Path(arg).expanduser()
        candidate = path if _inside(path, trash) else trash / _relative(path, runs_dir, "runs folder")
        if candidate.is_dir():
            matches = [t for key, t in in_trash.items() if candidate.resolve() in key.parents]
        else:
            matches = [in_trash[candidate.resolve()]] if candidate.resolve() in in_trash else []
        if not matches:
            raise TuitrainError(f"{arg}: not in the trash ({trash}); `tuitrain restore` lists what is.")
        for t in matches:
            chosen[t.trashed.resolve()] = t
    for t in chosen.values():
        for part in companions(t.trashed, t.record):
            target = t.original.parent / part.name
            if target.exists():
                raise TuitrainError(f"{target}: exists; not overwritten by a restore. Nothing changed.")
    restored = []
    for t in chosen.values():
        folder = t.original.parent
        new_folder = not folder.exists()
        with folder_held(folder) if not new_folder else ExitStack():
            for part in companions(t.trashed, t.record):
                _move(part, folder / part.name)
        if new_folder:
            # the folder was trashed whole: what is not a trashed run's own goes back with its first run
            owned = {p.name for other in trashed_runs(runs_dir) for p in companions(other.trashed, other.record)}
            for entry in sorted(t.trashed.parent.iterdir()):
                if entry.is_file() and entry.name not in owned and not (folder / entry.name).exists():
                    _move(entry, folder / entry.name)
        _prune(t.trashed.parent, trash)
        restored.append(t)
    _prune(trash, runs_dir)
    return restored


def _inside(path: Path, folder: Path) -> bool:
    resolved, root = path.resolve(), Path(folder).resolve()
    return resolved == root or root in resolved.parents


def edit_runs(args: Sequence[str | Path], change: Callable[[RunRecord], None]) -> list[RunFile]:
    """Apply `change` to each named run's record and rewrite its file atomically (its folder held, its heartbeat
    and everything `change` leaves alone as they were); every run is checked first (readable, not live)."""
    runs = _runs_named(args)
    for run in runs:
        if run.record is None:
            raise TuitrainError(f"{run.error}")
        reason = live_reason(run)
        if reason is not None:
            raise TuitrainError(
                f"{run.path}: is live: {reason}; its process rewrites the file, so an edit now would be lost. "
                "Edit it once it has ended."
            )
    for run in runs:
        with folder_held(run.path.parent):
            try:
                record = read_record(run.path, series=False)  # again, under the lock: what is on disk now
            except RecordError as exc:
                raise TuitrainError(str(exc)) from None
            if effective_status(record) == "running":
                raise TuitrainError(f"{run.path}: is live: it started training again; nothing changed.")
            change(record)
            try:
                atomic_write_text(run.path, record_text(record, beat=False))
            except OSError as exc:
                raise TuitrainError(f"{run.path}: cannot write ({exc.strerror or exc}); unchanged.") from None
            run.record = record
    return runs


def check_label(label: str) -> str:
    label = label.strip()
    if not label:
        raise TuitrainError("a label cannot be empty.")
    if "\n" in label or len(label) > MAX_LABEL:
        raise TuitrainError(f"a label is one line of at most {MAX_LABEL} characters.")
    return label


def relabel(record: RunRecord, label: str) -> None:
    """Give the run a new label (the user's text; its settings stay as they are), keeping the one it was given."""
    if record.original_label is None and label != record.label:
        record.original_label = record.label
    record.label = label


def parse_tag_changes(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """`+tag` adds, `-tag` removes: the tags to add and to remove; TuitrainError for a malformed one."""
    add: list[str] = []
    remove: list[str] = []
    for word in words:
        sign, tag = word[:1], word[1:].strip()
        if sign not in "+-" or not sign:
            raise TuitrainError(f"{word!r}: write +TAG to add a tag, -TAG to remove one.")
        if not tag or any(ch.isspace() for ch in tag) or "," in tag:
            raise TuitrainError(f"{word!r}: a tag is one word (no spaces or commas).")
        (add if sign == "+" else remove).append(tag)
    return add, remove


def retag(record: RunRecord, add: Sequence[str], remove: Sequence[str]) -> None:
    record.tags = [t for t in record.tags if t not in remove] + [t for t in add if t not in record.tags]
    record.tags = list(dict.fromkeys(record.tags))


def renote(record: RunRecord, text: str) -> None:
    record.notes = text.strip() or None
