"""Running a preset: one invocation folder under runs/, one run file per run, runs in turn.

Both front ends (headless CLI and the Textual app) call run_preset with their own sink; this
module never imports textual.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from tuitrain.errors import TuitrainError
from tuitrain.presets import Preset, PresetRun
from tuitrain.records import RunRecord, write_record
from tuitrain.train.data import MnistArrays, resolve_mnist
from tuitrain.train.events import LogMessage, Sink
from tuitrain.train.loop import RunControl, TensorData, fit, new_record, select_device

DEFAULT_RUNS_DIR = Path("runs")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60] or "run"


def check_writable(folder: Path) -> None:
    """Fail before training, not after an hour, if run files cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tuitrain-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TuitrainError(
            f"{folder}: runs folder is not writable ({exc.strerror or exc}). Pass --runs-dir with a writable folder."
        ) from None


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


@dataclass
class PresetInvocation:
    """A preset's runs as they will be trained, with where their files go."""

    preset: Preset
    runs: list[PresetRun]
    runs_dir: Path
    data_dir: Optional[Path] = None
    invocation: str = ""
    folder: Optional[Path] = None
    records: list[RunRecord] = field(default_factory=list)

    @classmethod
    def prepare(
        cls, preset: Preset, *, runs_dir: Path = DEFAULT_RUNS_DIR, overrides: Optional[dict[str, Any]] = None,
        data_dir: Optional[Path] = None,
    ) -> "PresetInvocation":
        """Validate everything that can fail cheaply (overrides, device, runs folder) before any training."""
        runs = preset.expand(overrides)
        for run in runs:
            select_device(run.spec.device)
        check_writable(Path(runs_dir))
        return cls(preset=preset, runs=runs, runs_dir=Path(runs_dir), data_dir=data_dir)

    def run(self, sink: Sink, control: Optional[RunControl] = None, arrays: Optional[MnistArrays] = None) -> list[RunRecord]:
        control = control or RunControl()
        log = lambda text: sink(LogMessage(text))  # noqa: E731
        if arrays is None:
            arrays = resolve_mnist(self.data_dir, log=log)
        log(f"Data: MNIST from {arrays.source}")
        if self.folder is None:  # a detached run is given its folder up front (see cli.run_detached)
            self.invocation, self.folder = new_invocation_dir(self.runs_dir, self.preset.name)
        tensors: dict[tuple, TensorData] = {}
        for index, run in enumerate(self.runs):
            if control.stop_all.is_set():
                break
            control.stop_run.clear()
            device = select_device(run.spec.device)
            key = (str(device), run.spec.subset, run.spec.test_subset)
            if key not in tensors:
                tensors.clear()  # hold one copy at a time: GPU memory is not free
                tensors[key] = TensorData.from_arrays(arrays, device, run.spec.subset, run.spec.test_subset)
            path = self.folder / f"{index + 1:02d}-{slug(run.label)}.json"
            record = new_record(
                run.spec, device, run_id=f"{self.invocation}-{index + 1:02d}", label=run.label,
                preset=self.preset.name, invocation=self.invocation,
            )
            self.records.append(record)
            fit(
                run.spec, sink, control, data=tensors[key], record=record,
                persist=lambda r, p=path: write_record(r, p), run_index=index, run_count=len(self.runs), path=path,
            )
        return self.records

    def not_started(self) -> list[str]:
        return [r.label for r in self.runs[len(self.records):]]
