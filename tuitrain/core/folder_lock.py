"""Who holds an invocation folder: the lock file that the training (or resuming) process locks and names itself in.

Torch- and numpy-free, so that a command that only asks a trainer something (`tuitrain stop`) starts fast.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from tuitrain.core.processes import pid_alive

LOCK_FILE = "tuitrain.lock"
"""In each invocation folder: locked (flock) by the process that trains or resumes its runs, which also writes
"pid N on HOST" there, so that a second one is refused instead of both writing the same files."""


def holder_line() -> str:
    """What a process that holds a folder's lock writes in its lock file: who it is, for people and for requests."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


def lock_holder(folder: Path) -> str | None:
    """The holder line in a folder's lock file (the last process that held it), if any."""
    try:
        return (Path(folder) / LOCK_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def folder_writer_alive(folder: Path) -> bool | None:
    """Whether the process that last trained or resumed an invocation folder (its lock file says which) is still
    there; None when that cannot be told from here (no lock file, or another host). With runs trained in worker
    processes, this process, not a run's worker, decides whether more runs will start."""
    words = (lock_holder(folder) or "").split()
    if len(words) != 4 or words[0] != "pid" or not words[1].isdigit() or words[3] != socket.gethostname():
        return None
    return pid_alive(int(words[1]))


def folder_locked(folder: Path) -> bool:
    """Whether a process holds the folder's lock now (its holder line may name a process that let go of it and lives
    on: the app, once a preset has ended). Probed with a shared lock taken and dropped at once."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the probe's lock too
    return False
