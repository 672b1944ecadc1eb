"""Messages posted by workers to the UI thread. Small dataclasses; one per engine event, never per batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textual.message import Message

from tuitrain.catalog import RunFile
from tuitrain.compare import Comparison
from tuitrain.core.events import Event
from tuitrain.presets import Traversable


@dataclass
class EngineEvent(Message):
    """An engine event (already chunked by the engine: BatchLosses carry log_every losses)."""

    event: Event


@dataclass
class SourceFailed(Message):
    """The event source stopped with a user-facing error (no data, unwritable folder, …)."""

    error: str


@dataclass
class EstimateReady(Message):
    """The estimated time of one preset on this device (None: could not be estimated)."""

    name: str
    seconds: float | None
    error: str | None = None
    jobs: int | None = None
    """The runs it would train at once (the estimate assumes them)."""


@dataclass
class StartEstimated(Message):
    """The preset given on the command line, estimated before it starts (seconds None: no estimate)."""

    name: str
    device: str
    seconds: float | None


@dataclass
class DeviceKnown(Message):
    """The device that training will use, in words."""

    device: str


@dataclass
class RunsLoaded(Message):
    """Saved run files under the runs folder, newest first."""

    runs: list[RunFile]


@dataclass
class ComparisonLoaded(Message):
    """The compare screen's run files were read and compared."""

    comparison: Comparison


@dataclass
class ReportWritten(Message):
    """The compare screen wrote the report of the runs it shows (path), or could not (error)."""

    path: Path | None
    error: str | None = None


@dataclass
class StartPreset(Message):
    """The user asked to train this preset (a name or a .toml path)."""

    preset: str
    path: Path | Traversable | None = None
    overrides: dict | None = None
    """Settings over the command line's for this start only (e.g. the quick variant of a long preset)."""
    jobs: int | Literal["auto"] | None = None
    """Runs to train at once (None: as the preset says)."""


@dataclass
class WatchRuns(Message):
    """The user asked to watch a run that another process is training (a run file or invocation folder)."""

    path: Path
