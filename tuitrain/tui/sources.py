"""Where a run screen's events come from. The screen runs `source.run(sink)` in a thread worker.

A source that trains (PresetSource) has a RunControl; one that only watches (tuitrain.follow.Follower,
reading another process's run files) has none, and the run screen then hides the pause/stop keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol

from tuitrain.session import PresetInvocation
from tuitrain.train.events import Sink
from tuitrain.train.loop import RunControl


class EventSource(Protocol):
    title: str
    control: Optional[RunControl]

    def run(self, sink: Sink) -> None:
        """Deliver events to `sink` until there are no more; called on a worker thread."""

    def stop(self) -> None:
        """Ask run() to return soon (thread-safe)."""

    def result_folder(self) -> Optional[Path]:
        """Where the run files are, once known."""


class PresetSource:
    """Trains a prepared preset invocation in this process."""

    def __init__(self, invocation: PresetInvocation) -> None:
        self.invocation = invocation
        self.control: Optional[RunControl] = RunControl()
        preset = invocation.preset
        self.title = f"{preset.name}: {preset.title}"

    def run(self, sink: Sink) -> None:
        self.invocation.run(sink, self.control)

    def stop(self) -> None:
        self.control.stop_all.set()

    def result_folder(self) -> Optional[Path]:
        return self.invocation.folder
