"""Pausing and stopping runs that another process trains, through files in their invocation folder.

A controller (`tuitrain stop|pause|unpause`, or the watch screen's p, n and x) writes a request file
(control-<time>-<pid>-<random>.request, atomically) addressed to the trainer that holds the folder: the holder line
of its lock file (core.folder_lock, "pid N on HOST"). The invoking process that holds the lock polls the folder
every POLL_S with a small thread (RequestPoller): it sets the runs' RunControl flags as the app's own keys do (the
scheduler forwards them to worker processes and Ray actors; the loop acts at the next batch boundary and records
it: paused_s, interrupted), deletes the request, and rewrites the state file (CONTROL_STATE_FILE) with what its
controls say now: the runs it trains, which of them are paused or stopping, and what it did with each request. A
watcher shows that state (the trainer's own, not what was asked), and a controller knows that its request was taken.

Files, not signals: a request names its runs, and it works for a process started on another host that writes to a
shared disk. Nothing from an earlier life of the folder acts on a new one: a request for another holder is dropped,
a trainer deletes the requests left in its folder as it starts, and marks its state file ended as it ends (one
left by a crash names a holder that is gone or no longer holds the lock, so it is not taken as live).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.control import RunControl
from tuitrain.core.folder_lock import folder_writer_alive, holder_line, lock_holder

CONTROL_STATE_FILE = "tuitrain.control"
"""Beside the run files while a trainer holds the folder: its controls' state (JSON; not *.json, never a run)."""
REQUEST_PREFIX = "control-"
REQUEST_SUFFIX = ".request"
POLL_S = 0.2
"""How often the trainer looks for requests: a stop takes effect within this, a forwarding and a batch."""
KEPT_ANSWERS = 32
"""Answers to the latest requests kept in the state file (a controller reads its own)."""

Action = Literal["pause", "unpause", "stop"]


class ControlRequest(BaseModel):
    """A request to the trainer that holds an invocation folder."""

    id: str
    """Unique: the trainer's answer is kept under it."""
    holder: str
    """The lock holder line of the trainer it is for: any other trainer drops it."""
    action: Action
    """pause or unpause runs, or stop them (saved as interrupted)."""
    run_ids: list[str] | None = None
    """The runs it is for; None: every run (stop: and start no more)."""


class TrainerState(BaseModel):
    """What a trainer's controls say, written by the trainer as they change."""

    holder: str
    """The trainer's lock holder line."""
    started_at: datetime
    """When the trainer took the folder (the newest live invocation is the one started last)."""
    runs: dict[str, str] = Field(default_factory=dict)
    """The runs training now: run id to label."""
    paused: list[str] = Field(default_factory=list)
    """Runs (of `runs`) whose controls say paused: each waits at its next batch boundary."""
    stopping: list[str] = Field(default_factory=list)
    """Runs (of `runs`) told to stop, being saved as interrupted."""
    stop_all: bool = False
    """Every run was told to stop; no more start."""
    answers: dict[str, str] = Field(default_factory=dict)
    """What the trainer did with its latest requests, by request id."""
    acted_on: dict[str, list[str]] = Field(default_factory=dict)
    """The runs each of those requests acted on (those training as it was taken), by request id: a run that ends
    before the next state is written is in no `runs`."""
    ended: bool = False
    """The trainer has let go of the folder and takes no more requests (its last answers stay readable: a stop
    can end it before the controller has read its answer)."""


def read_state_file(folder: Path) -> TrainerState | None:
    """The state file as it is (possibly a trainer's that has ended or died), or None when there is none."""
    try:
        return TrainerState.model_validate_json((Path(folder) / CONTROL_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValidationError):
        return None


def read_state(folder: Path) -> TrainerState | None:
    """The state of the trainer that holds `folder` now, or None when no live trainer takes requests there."""
    state = read_state_file(folder)
    if state is None or state.ended:
        return None
    # a state file left by a trainer that crashed: another process holds the folder now, or none does
    if state.holder != lock_holder(folder) or folder_writer_alive(folder) is False:
        return None
    return state


def send_request(folder: Path, state: TrainerState, action: Action, run_ids: list[str] | None = None) -> str:
    """Write a request to the trainer whose state is `state`; returns its id (its answer appears under it)."""
    request_id = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}"
    request = ControlRequest(id=request_id, holder=state.holder, action=action, run_ids=run_ids)
    # whole or absent (renamed into place), but not synced to the disk: it is read within a poll or not needed
    path = Path(folder) / f"{REQUEST_PREFIX}{request_id}{REQUEST_SUFFIX}"
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(request.model_dump_json(), encoding="utf-8")
    os.replace(partial, path)
    return request_id


def wait_for_answer(folder: Path, request_id: str, timeout_s: float) -> tuple[str | None, TrainerState | None]:
    """The trainer's answer to a request and its state then (marked ended if the request ended it); (None, its
    state) if none came in `timeout_s`, or (None, None) if the trainer ended without taking it."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state_file(folder)
        if state is not None and request_id in state.answers:
            return state.answers[request_id], state
        live = read_state(folder)
        if live is None or time.monotonic() >= deadline:
            return None, live
        time.sleep(0.05)


def live_folders(runs_dir: Path) -> list[tuple[Path, TrainerState]]:
    """The invocation folders directly under `runs_dir` with a live trainer that takes requests, the newest first."""
    try:
        folders = [d for d in Path(runs_dir).iterdir() if (d / CONTROL_STATE_FILE).is_file()]
    except OSError:
        return []
    live = [(folder, state) for folder in folders if (state := read_state(folder)) is not None]
    return sorted(live, key=lambda pair: pair[1].started_at, reverse=True)


class RequestPoller:
    """The trainer's side: takes the requests in its folder and keeps its state file, on a thread of its own.

    `controls(run_id)` gives a started run's own controls; `live_runs()` the runs training now (run id to label);
    `control` is the invocation's (stop_all; paused: every run, those that start later too)."""

    def __init__(
        self,
        folder: Path,
        control: RunControl,
        controls: Callable[[str], RunControl | None],
        live_runs: Callable[[], dict[str, str]],
        poll_s: float = POLL_S,
    ) -> None:
        self.folder = Path(folder)
        self.control = control
        self.controls = controls
        self.live_runs = live_runs
        self.poll_s = poll_s
        self.holder = holder_line()
        self.started_at = datetime.now(timezone.utc)
        self.answers: dict[str, str] = {}
        self.acted_on: dict[str, list[str]] = {}
        self.written: TrainerState | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RequestPoller:
        """Drop the requests left from an earlier life of the folder, say that this trainer takes requests, and
        start polling."""
        for path in self.request_files():
            with contextlib.suppress(OSError):
                path.unlink()
        self.write_state()
        self._thread = threading.Thread(target=self.work, name="tuitrain-control-requests", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop polling and mark the state file ended: nothing here takes requests any more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with contextlib.suppress(OSError):
            self.poll_once()  # a request that came as the runs ended is answered (with nothing to do)
            state = self.state().model_copy(update={"runs": {}, "paused": [], "stopping": [], "ended": True})
            atomic_write_text(self.folder / CONTROL_STATE_FILE, state.model_dump_json(indent=1))

    def work(self) -> None:
        while not self._stop.wait(self.poll_s):
            with contextlib.suppress(OSError):  # a folder that cannot be read or written now: try again
                self.poll_once()

    def request_files(self) -> list[Path]:
        try:
            return sorted(self.folder.glob(f"{REQUEST_PREFIX}*{REQUEST_SUFFIX}"))  # named by time: in order
        except OSError:
            return []

    def poll_once(self) -> None:
        for path in self.request_files():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            try:
                request = ControlRequest.model_validate_json(text)
            except ValidationError:
                continue
            if request.holder != self.holder:
                continue  # for an earlier trainer of this folder
            self.answers[request.id], self.acted_on[request.id] = self.apply(request)
            while len(self.answers) > KEPT_ANSWERS:
                oldest = next(iter(self.answers))
                del self.answers[oldest], self.acted_on[oldest]
        self.write_state()

    def apply(self, request: ControlRequest) -> tuple[str, list[str]]:
        """Set the controls a request asks for; says what was done, for the controller to print, and the runs it
        acted on."""
        live = self.live_runs()
        targets = list(live) if request.run_ids is None else [r for r in request.run_ids if r in live]
        return self.set_controls(request, live, targets), targets

    def set_controls(self, request: ControlRequest, live: dict[str, str], targets: list[str]) -> str:
        if request.run_ids is not None and not targets:
            return "not training now: nothing to do"
        if request.action == "stop" and request.run_ids is None:
            self.control.stop_all.set()
            return "stopping every run; no more start" if targets else "stopping; no more runs start"
        if not targets:
            return "no run is training now: nothing to do"
        names = ", ".join(live[r] for r in targets)
        if request.action == "stop":
            for run_id in targets:
                if (own := self.controls(run_id)) is not None:
                    own.stop_run.set()
            return f"stopping {names}"
        if request.action == "pause":
            if request.run_ids is None:
                self.control.paused.set()  # the runs that start later wait too
            for run_id in targets:
                if (own := self.controls(run_id)) is not None:
                    own.paused.set()
            return f"paused {names}"
        if self.control.paused.is_set() and request.run_ids is not None:
            # every run was paused: the others stay paused, each on its own controls
            self.control.paused.clear()
            for run_id in live:
                if (own := self.controls(run_id)) is not None and run_id not in targets:
                    own.paused.set()
        if request.run_ids is None:
            self.control.paused.clear()
        for run_id in targets:
            if (own := self.controls(run_id)) is not None:
                own.paused.clear()
        return f"going on with {names}"

    def state(self) -> TrainerState:
        live = self.live_runs()
        paused, stopping = [], []
        for run_id in live:
            own = self.controls(run_id)
            if self.control.paused.is_set() or (own is not None and own.paused.is_set()):
                paused.append(run_id)
            if self.control.stop_all.is_set() or (own is not None and own.stop_run.is_set()):
                stopping.append(run_id)
        return TrainerState(
            holder=self.holder,
            started_at=self.started_at,
            runs=live,
            paused=paused,
            stopping=stopping,
            stop_all=self.control.stop_all.is_set(),
            answers=dict(self.answers),
            acted_on=dict(self.acted_on),
        )

    def write_state(self) -> None:
        state = self.state()
        if state != self.written:
            atomic_write_text(self.folder / CONTROL_STATE_FILE, state.model_dump_json(indent=1))
            self.written = state


class RemoteControls:
    """A watcher's side: the state of the trainer of a folder (as last read) and requests to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.state: TrainerState | None = None
        """The trainer's state as last read; None: no live trainer takes requests there."""

    def refresh(self) -> None:
        """Read the trainer's state again (off the app's main thread: the follower's polls)."""
        self.state = read_state(self.folder)

    @property
    def live(self) -> bool:
        return self.state is not None

    @property
    def paused(self) -> set[str]:
        """The runs that the trainer says are paused."""
        return set(self.state.paused) if self.state is not None else set()

    def request(self, action: Action, run_ids: list[str] | None = None) -> bool:
        """Send a request (it does not wait for the answer); False when no live trainer is there to take it."""
        state = self.state
        if state is None:
            return False
        try:
            send_request(self.folder, state, action, run_ids)
        except OSError:
            return False
        return True
