"""The status vocabulary of runs: what a run file stores, and what a reader shows."""

from __future__ import annotations

from typing import Literal

RunStatus = Literal["running", "completed", "interrupted", "diverged", "failed", "crashed"]
"""What a run file stores: the training process's own word for the run, or 'crashed' when the process that writes
the run files saw the worker process training it die."""

ShownStatus = Literal["running", "completed", "interrupted", "diverged", "failed", "crashed", "unreadable"]
"""What a reader shows: a stored status, 'crashed' for a 'running' run whose process is gone, or
'unreadable' for a file that cannot be read."""

RESUMABLE: tuple[ShownStatus, ...] = ("interrupted", "crashed")
"""Statuses `--resume` continues from the last checkpoint."""
