"""`tuitrain stop|pause|unpause`: controlling runs that another process trains, through request files that the
trainer holding the invocation folder takes (tuitrain.remote_control).

The trainers are real: a preset trained in a thread of this process, or `--detach`ed with worker processes. Waits
are on conditions with generous timeouts, never on time passing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tuitrain.cli import main
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RecordError
from tuitrain.core.folder_lock import LOCK_FILE, holder_line
from tuitrain.follow import DETACHED_LOG
from tuitrain.presets import load_preset_file
from tuitrain.records import RunRecord, read_record
from tuitrain.remote_control import (
    CONTROL_STATE_FILE,
    REQUEST_PREFIX,
    REQUEST_SUFFIX,
    ControlRequest,
    TrainerState,
    read_state,
    read_state_file,
)
from tuitrain.session import PresetInvocation

TIMEOUT_S = 240.0  # generous: the tests share two cores with whatever else runs


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def record_or_none(path: Path) -> RunRecord | None:
    try:
        return read_record(path)
    except (RecordError, OSError):
        return None  # not written yet, or being replaced


def statuses(folder: Path, files: list[str]) -> list[str | None]:
    return [r.status if (r := record_or_none(folder / name)) is not None else None for name in files]


def epochs(path: Path) -> int:
    """The epochs a run file has (written as each epoch ends)."""
    record = record_or_none(path)
    return len(record.epochs) if record is not None else 0


def paused_s(record: RunRecord) -> float:
    return sum(e.paused_s for e in record.epochs)


def test_pause_unpause_and_stop_a_run_then_all_from_the_command_line(
    tiny_preset: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    loop_waits = threading.Event()  # the loop has met the pause at a batch boundary
    wait_while_paused = RunControl.wait_while_paused

    def noting_the_wait(self: RunControl, *args: object, **kwargs: object) -> float:
        if self.paused.is_set():
            loop_waits.set()
        return wait_while_paused(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RunControl, "wait_while_paused", noting_the_wait)
    # a preset trained one run at a time in a thread of this process: a trainer that holds its folder
    inv = PresetInvocation.prepare(
        load_preset_file(tiny_preset), runs_dir=runs, overrides={"epochs": 500}, data_dir=mnist_dir, jobs=1
    )
    control = RunControl()
    thread = threading.Thread(target=inv.run, args=(lambda event: None, control), daemon=True)
    thread.start()
    try:
        wait_until(lambda: inv.folder is not None and read_state(inv.folder) is not None, "the trainer")
        folder = inv.folder
        first, second = (folder / name for name in inv.files)
        wait_until(lambda: epochs(first) > 0, "the first run's first epoch")
        # no target: the newest live invocation in runs/ (run from the folder above it)
        with contextlib.chdir(tmp_path):
            assert main(["pause"]) == 0
        out = capsys.readouterr().out
        assert f"{folder.name} ({holder_line()}): paused activation=relu" in out
        assert "Paused: activation=relu" in out
        state = read_state(folder)
        assert state is not None and state.paused == [inv.run_id(0)]
        wait_until(loop_waits.is_set, "the loop to wait at a batch boundary")
        assert main(["unpause", str(folder)]) == 0
        assert "going on with activation=relu" in capsys.readouterr().out
        assert read_state(folder).paused == []
        after_pause = epochs(first)
        wait_until(lambda: epochs(first) > after_pause + 1, "an epoch after the pause")  # its pause recorded
        # a run file: that run alone stops; the sweep goes on with the next
        assert main(["stop", str(first)]) == 0
        out = capsys.readouterr().out
        assert "stopping activation=relu" in out and f"{first.name}: interrupted" in out
        wait_until(lambda: statuses(folder, inv.files) == ["interrupted", "running"], "the next run to start")
        # a folder: every run stops and no more start
        assert main(["stop", str(folder)]) == 0
        out = capsys.readouterr().out
        assert "stopping every run; no more start" in out and f"{second.name}: interrupted" in out
        thread.join(TIMEOUT_S)
        assert not thread.is_alive()
    finally:
        control.stop_all.set()
        thread.join(TIMEOUT_S)
    relu, tanh = read_record(first), read_record(second)
    assert [relu.status, tanh.status] == ["interrupted", "interrupted"]
    assert paused_s(relu) > 0 and paused_s(tanh) == 0  # recorded as the app's own pause is
    assert read_state_file(folder).ended  # the trainer said it takes no more requests as it ended
    # nothing live: one line, exit 2
    for argv in (["stop", str(folder)], ["pause", str(runs)], ["unpause", str(first)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tuitrain: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["stop", str(tmp_path / "nowhere")]) == 2
    assert "no such run file or folder" in capsys.readouterr().err


def test_requests_and_state_from_an_earlier_life_do_not_act_on_a_resumed_run(
    tiny_preset: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuitrain.core.events import BatchLosses

    control = RunControl()
    inv = PresetInvocation.prepare(
        load_preset_file(tiny_preset), runs_dir=tmp_path / "runs", overrides={"epochs": 2}, data_dir=mnist_dir
    )
    inv.run(lambda e: control.stop_all.set() if isinstance(e, BatchLosses) else None, control)
    folder = inv.folder
    assert folder is not None and read_record(folder / inv.files[0]).status == "interrupted"
    # a crashed trainer's state file: its holder no longer holds the folder, so nothing is live there
    stale = TrainerState(
        holder="pid 999999999 on elsewhere",
        started_at="2026-01-01T00:00:00Z",
        runs={inv.run_id(0): "activation=relu"},
        paused=[inv.run_id(0)],
    )
    (folder / CONTROL_STATE_FILE).write_text(stale.model_dump_json())
    assert read_state(folder) is None
    assert main(["pause", str(folder)]) == 2
    assert "nothing is training there now" in capsys.readouterr().err
    # requests left for an earlier trainer, one of them with this very holder line (a pid used again)
    for holder in (stale.holder, holder_line()):
        request = ControlRequest(id=f"old-{len(holder)}", holder=holder, action="pause")
        (folder / f"{REQUEST_PREFIX}0-{len(holder)}{REQUEST_SUFFIX}").write_text(request.model_dump_json())
    resumed = PresetInvocation.resume(folder, data_dir=mnist_dir, jobs=1)
    records = resumed.run(lambda event: None, RunControl())
    assert [r.status for r in records] == ["completed", "completed"]
    assert all(e.paused_s == 0 for r in records for e in r.epochs)  # never paused
    assert not list(folder.glob(f"{REQUEST_PREFIX}*"))  # dropped as the trainer started
    assert read_state_file(folder).ended


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_detached_sweep_with_worker_processes_is_paused_resumed_and_stopped(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--preset", str(tiny_preset), "--no-ui", "--detach", "--jobs", "2", "--epochs", "500"]
    assert main([*args, "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    pid = int(re.search(r"pid (\d+)", out).group(1))
    folder = Path(re.search(r"Run folder: (.+)", out).group(1))
    files = json.loads((folder / "invocation.plan").read_text())["runs"]
    first, second = (folder / run["file"] for run in files)
    try:
        wait_until(lambda: epochs(first) > 0 and epochs(second) > 0, "both runs to train")
        assert (folder / LOCK_FILE).read_text().startswith(f"pid {pid} ")  # the detached process holds the folder
        assert main(["pause", str(folder)]) == 0
        assert "paused activation=relu, activation=tanh" in capsys.readouterr().out
        state = read_state(folder)
        assert state is not None and len(state.paused) == 2 and state.holder.startswith(f"pid {pid} ")
        assert main(["unpause", str(first)]) == 0  # that run alone goes on
        assert "going on with activation=relu" in capsys.readouterr().out
        assert read_state(folder).paused == [read_record(second).id]
        # the paused worker ends no epoch (each is saved as it ends) while the other trains several: at most the one
        # it was ending as the pause reached it
        second_at, first_at = epochs(second), epochs(first)
        wait_until(lambda: epochs(first) > first_at + 3, "the unpaused run to go on")
        held = epochs(second)
        assert held <= second_at + 1
        wait_until(lambda: epochs(first) > first_at + 6, "the unpaused run to go on further")
        assert epochs(second) == held
        assert main(["unpause", str(folder)]) == 0
        wait_until(lambda: epochs(second) > held, "the other run to go on")  # the epoch of its pause saved
        assert main(["stop", str(first)]) == 0
        assert f"{first.name}: interrupted" in capsys.readouterr().out
        assert read_record(second).status == "running"
        assert main(["stop", str(folder)]) == 0
        out = capsys.readouterr().out
        assert f"{second.name}: interrupted" in out
        wait_until(lambda: "Run files:" in (folder / DETACHED_LOG).read_text(), "the detached process to end")
        records = [read_record(first), read_record(second)]
        assert [r.status for r in records] == ["interrupted", "interrupted"]
        assert pid not in {r.env.pid for r in records}  # trained by worker processes
        assert paused_s(records[1]) > 0  # recorded as the app's own pauses are (it waited while the other trained)
        assert "Continue with: tuitrain --resume" in (folder / DETACHED_LOG).read_text()
        assert main(["stop", str(folder)]) == 2
        assert "nothing is training there now" in capsys.readouterr().err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_process_that_holds_the_folder_but_takes_no_requests_yet_is_said_to_be_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuitrain.session import lock_folder, release_folder

    folder = tmp_path / "runs" / "20261205-000000-tiny-abcdef"
    folder.mkdir(parents=True)
    lock_folder(folder)  # as a detached process does while it loads torch and the data
    try:
        assert main(["stop", str(folder)]) == 2
        assert f"the training process ({holder_line()}) is still starting; try again." in capsys.readouterr().err
    finally:
        release_folder(folder)
    assert main(["stop", str(folder)]) == 2  # its holder gone: nothing is training there
    assert "nothing is training there now" in capsys.readouterr().err


def test_a_trainer_that_does_not_answer_in_time_gets_the_request_later(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime, timezone

    import tuitrain.cli
    from tuitrain.session import lock_folder, release_folder

    monkeypatch.setattr(tuitrain.cli, "CONTROL_ANSWER_S", 0.2)
    folder = tmp_path / "runs" / "20261205-000000-tiny-abcdef"
    folder.mkdir(parents=True)
    lock_folder(folder)  # a trainer that takes requests, busy elsewhere: its state says so, nothing answers
    try:
        state = TrainerState(holder=holder_line(), started_at=datetime.now(timezone.utc), runs={"r1": "lr=0.1"})
        (folder / CONTROL_STATE_FILE).write_text(state.model_dump_json(), encoding="utf-8")
        assert main(["pause", str(folder)]) == 1
        err = capsys.readouterr().err
        assert f"{folder}: the training process ({holder_line()}) has not answered in 0 s" in err
        (request,) = folder.glob(f"{REQUEST_PREFIX}*{REQUEST_SUFFIX}")  # left for the trainer to take
        assert ControlRequest.model_validate_json(request.read_text(encoding="utf-8")).action == "pause"
    finally:
        release_folder(folder)


def test_the_answer_names_the_runs_a_request_acted_on_even_those_ended_before_the_state_is_written(
    tmp_path: Path,
) -> None:
    """A stop of every run: a run that ends at once is in no state's `runs`, yet the controller waits for its file."""
    from tuitrain.remote_control import RequestPoller, send_request

    live = {"run-a": "activation=relu", "run-b": "activation=tanh"}
    control = RunControl()

    def live_runs() -> dict[str, str]:
        return dict(live)

    poller = RequestPoller(tmp_path, control, lambda run_id: None, live_runs, poll_s=3600)
    poller.write_state()  # as start() does, without its polling thread: polls happen here, one at a time
    before = read_state_file(tmp_path)
    assert before is not None and before.runs == live
    request_id = send_request(tmp_path, before, "stop")
    applied = poller.apply

    def apply_then_both_end(request: ControlRequest) -> tuple[str, list[str]]:
        answer = applied(request)
        live.clear()  # both runs stopped at their batch boundary before the state was written
        return answer

    poller.apply = apply_then_both_end  # type: ignore[method-assign]
    poller.poll_once()
    after = read_state_file(tmp_path)
    assert after is not None and control.stop_all.is_set()
    assert after.answers[request_id] == "stopping every run; no more start"
    assert after.runs == {} and after.acted_on[request_id] == ["run-a", "run-b"]
