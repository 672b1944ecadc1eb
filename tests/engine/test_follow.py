"""Following run files written by another process: the same events as the training loop emits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import start_headless
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
)
from tuitrain.core.spec import RunSpec
from tuitrain.follow import Follower, RunFileReader, RunTracker, newest_invocation
from tuitrain.keeper import LocalRunFiles
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, write_record
from tuitrain.train.data import load_idx_folder
from tuitrain.train.loop import RunPlace, fit

ROOT = Path(__file__).resolve().parents[2]
STARTED = datetime.now(timezone.utc)  # after this process started: its pid counts as the writer's
SUBPROCESS_TIMEOUT_S = 240  # generous: the tests share two cores with whatever else runs


def spec(**kw) -> RunSpec:
    base = dict(model="model_a", epochs=3, batch_size=32, lr=0.003, log_every=4, device="cpu", seed=3)
    base.update(kw)
    return RunSpec(**base)


def losses_of(events: list[Event], run_id: str | None = None) -> list[float]:
    return [v for e in events if isinstance(e, BatchLosses) and run_id in (None, e.run_id) for v in e.losses]


def of_type(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def steps_are_contiguous(events: list[Event]) -> bool:
    nxt: dict[str, int] = {}
    for e in events:
        if isinstance(e, RunStarted):
            nxt[e.run_id] = 0
        elif isinstance(e, BatchLosses):
            if e.first_step != nxt.get(e.run_id):
                return False
            nxt[e.run_id] = e.first_step + len(e.losses)
    return True


def follow_until(
    follower: Follower, done: Callable[[list[Event]], bool], timeout: float, events: list[Event]
) -> list[Event]:
    deadline = time.monotonic() + timeout
    while not done(events):
        assert time.monotonic() < deadline, f"timed out; events so far: {[type(e).__name__ for e in events]}"
        events.extend(follower.poll())
        time.sleep(0.1)
    return events


# -- in process: each saved version is followed at once ---------------------------------------------------


def test_follower_rebuilds_the_engine_events(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "inv" / "01-run.json"
    path.parent.mkdir()
    follower = Follower(path.parent)
    engine: list[Event] = []
    followed: list[Event] = []
    polls_with_losses = 0

    class Watched(LocalRunFiles):
        def write(self, text: str) -> None:  # the follower looks after each save of the run file
            nonlocal polls_with_losses
            super().write(text)
            new = follower.poll()
            polls_with_losses += bool(losses_of(new))
            followed.extend(new)

    fit(spec(), engine.append, data=load_idx_folder(mnist_dir), files=Watched(path), place=RunPlace(run_file=path))

    started = of_type(followed, RunStarted)
    assert len(started) == 1 and started == of_type(engine, RunStarted)  # every field, device and sizes included
    assert losses_of(followed) == losses_of(engine)
    assert polls_with_losses >= 3  # arrived as the run went, not all at the end
    assert steps_are_contiguous(followed)
    assert of_type(followed, EpochEnded) == of_type(engine, EpochEnded)
    assert of_type(followed, RunFinished)[0].status == "completed"
    assert isinstance(followed[-1], RunFinished)
    # each chunk belongs to one epoch and says how far into it it goes
    bpe = started[0].batches_per_epoch
    for e in of_type(followed, BatchLosses):
        assert e.first_step // bpe + 1 == e.epoch
        assert e.batch == e.first_step + len(e.losses) - (e.epoch - 1) * bpe
        assert 0 < e.batch <= bpe
    # epochs are announced after their losses, as the loop does
    kinds = [
        (type(e).__name__, getattr(e, "epoch", None)) for e in followed if isinstance(e, (BatchLosses, EpochEnded))
    ]
    for i, (kind, epoch) in enumerate(kinds):
        if kind == "EpochEnded":
            assert kinds[i - 1] == ("BatchLosses", epoch)


def test_whole_history_is_replayed_when_watching_starts_late(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "01-run.json"
    engine: list[Event] = []
    fit(
        spec(epochs=2),
        engine.append,
        data=load_idx_folder(mnist_dir),
        files=LocalRunFiles(path),
        place=RunPlace(run_file=path),
    )
    followed = Follower(path).poll()
    assert [type(e) for e in followed][0] is RunStarted
    assert losses_of(followed) == losses_of(engine)
    assert of_type(followed, EpochEnded) == of_type(engine, EpochEnded)
    assert all(e.confusion is not None for e in of_type(followed, EpochEnded))  # a watcher's run screen has them too
    assert isinstance(followed[-1], RunFinished) and followed[-1].status == "completed"


# -- reading while the file is replaced ---------------------------------------------------------------------


def sample_record(**kw) -> RunRecord:
    base = dict(
        id="inv-01",
        label="a",
        preset="tiny",
        invocation="inv",
        spec=spec(epochs=2),
        env=EnvInfo(device="CPU", torch_version="x", threads=2),
        batches_per_epoch=4,
        train_size=128,
        test_size=64,
        run_index=0,
        run_count=1,
        started_at=STARTED,
    )
    base.update(kw)
    return RunRecord(**base)


def version(record: RunRecord, losses: int, at_s: float) -> RunRecord:
    """The file as saved `at_s` seconds after the run started, holding `losses` batch losses."""
    return record.model_copy(
        update={"batch_losses": [1.0] * losses, "heartbeat_at": record.started_at + timedelta(seconds=at_s)}
    )


def rates(events: list[Event]) -> list[tuple[int, float]]:
    return [(e.epoch, round(e.samples_per_s, 1)) for e in events if isinstance(e, BatchLosses)]


def test_batch_losses_carry_the_rate_of_their_own_epoch(tmp_path: Path) -> None:
    # epoch 1 trained 128 samples at 1000/s (and was evaluated); epoch 2 trains at 100/s: 4 batches of 32 in 1.28 s
    first = EpochRecord(
        epoch=1,
        initial_loss=2.0,
        final_loss=1.0,
        mean_loss=1.5,
        test_loss=1.0,
        test_accuracy=50.0,
        test_correct=32,
        test_total=64,
        duration_s=0.5,
        samples_per_s=1000.0,
        eval_s=0.372,
    )
    record = sample_record(spec=spec(epochs=3), epochs=[first])
    tracker = RunTracker(tmp_path / "01-a.json")
    assert rates(tracker.update(version(record, 4, 0.5))) == [(1, 1000.0)]  # saved at the end of epoch 1
    assert rates(tracker.update(version(record, 6, 0.5 + 0.64))) == [(2, 100.0)]
    assert tracker.update(version(record, 6, 30.0)) == []  # paused: the file is saved, no loss comes
    assert rates(tracker.update(version(record, 8, 30.64))) == [(2, 100.0)]  # the pause is not training time
    # watched from the middle of epoch 2: its start is the run's start plus epoch 1's duration
    late = RunTracker(tmp_path / "01-a.json")
    assert rates(late.update(version(record, 6, 0.5 + 0.64))) == [(1, 1000.0), (2, 100.0)]
    # a resumed run's file does not say when its epoch began: the second version times it
    resumed = record.model_copy(update={"resumed_at": [record.started_at + timedelta(minutes=5)]})
    tracker = RunTracker(tmp_path / "01-a.json")
    assert rates(tracker.update(version(resumed, 5, 300.32))) == [(1, 1000.0), (2, 1000.0)]
    assert rates(tracker.update(version(resumed, 7, 300.96))) == [(2, 100.0)]


def test_missing_half_written_and_invalid_files_are_retried_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "01-a.json"
    reader = RunFileReader(path)
    assert reader.read() is None and reader.failures == 1  # not there yet
    record = sample_record(batch_losses=[2.0, 1.5])
    text = record.model_dump_json(indent=1)
    path.write_text(text[: len(text) // 2])  # what a non-atomic writer leaves mid-write
    assert reader.read() is None and "not valid JSON" in reader.error
    path.write_text(text)
    assert reader.read().batch_losses == [2.0, 1.5]
    assert reader.read() is None  # unchanged: not parsed again

    follower = Follower(path)
    first = follower.poll()
    assert [type(e) for e in first] == [RunStarted, BatchLosses]
    path.write_text("{")
    for _ in range(5):  # the last good version stays; the reason is said once, after a few tries
        assert all(isinstance(e, LogMessage) for e in follower.poll())
    path.unlink()
    messages = [e for e in follower.poll() if isinstance(e, LogMessage)]
    assert len(messages) == 1 and "cannot read" in messages[0].text  # a new reason is said once more
    record.batch_losses.append(1.0)
    write_record(record, path)
    assert losses_of(follower.poll()) == [1.0]


def test_an_unreadable_file_is_waited_for_only_while_a_process_holds_its_folder(tmp_path: Path) -> None:
    from tuitrain.follow import REPORT_AFTER_FAILURES
    from tuitrain.session import lock_folder, release_folder

    folder = tmp_path / "20250102-100000-fixture-abcdef"
    folder.mkdir()
    path = folder / "01-a.json"
    path.write_text("{")
    lock_folder(folder)  # a live tuitrain process trains this folder: its files will come
    try:
        follower = Follower(path)
        texts = [e.text for _ in range(REPORT_AFTER_FAILURES + 2) for e in follower.poll() if isinstance(e, LogMessage)]
        assert len(texts) == 1 and "(still trying)" in texts[0] and not follower.done
    finally:
        release_folder(folder)
    path = tmp_path / "01-a.json"  # a folder that no tuitrain process holds: the file will stay as it is
    path.write_text("{")
    follower = Follower(path)
    texts = [e.text for _ in range(REPORT_AFTER_FAILURES) for e in follower.poll() if isinstance(e, LogMessage)]
    assert len(texts) == 1 and texts[0].startswith(f"Cannot read 01-a.json (no process writes it): {path}: not valid")
    assert follower.done
    write_record(sample_record(batch_losses=[2.0]), path)  # written after all: followed as any other
    assert losses_of(follower.poll()) == [2.0]


def test_rapid_rewrites_never_fail_or_go_backwards(tmp_path: Path) -> None:
    path = tmp_path / "01-a.json"
    record = sample_record()
    write_record(record, path)
    follower = Follower(path, poll_s=0)
    writes = 300
    stop = threading.Event()

    def writer() -> None:
        for i in range(writes):
            record.batch_losses.append(float(i))
            write_record(record, path)
        stop.set()

    thread = threading.Thread(target=writer)
    events: list[Event] = []
    thread.start()
    while not stop.is_set():
        events.extend(follower.poll())
    thread.join()
    events.extend(follower.poll())
    assert not of_type(events, LogMessage)
    assert len(of_type(events, RunStarted)) == 1
    assert losses_of(events) == [float(i) for i in range(writes)]
    assert steps_are_contiguous(events)


# -- folders ------------------------------------------------------------------------------------------------


def test_folder_follows_newest_invocation_and_runs_that_start_later(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old, new = runs / "20260101-100000-tiny-aaaaaa", runs / "20260102-100000-tiny-bbbbbb"
    old.mkdir(parents=True)
    write_record(sample_record(id="old-01", status="completed"), old / "01-a.json")
    new.mkdir()  # a detached run still loading its data: no run file yet
    follower = Follower(runs)
    assert follower.folder is None
    assert [type(e) for e in follower.poll()] == [LogMessage]  # waiting
    assert follower.folder == new and newest_invocation(runs) == new
    other = dict(env=EnvInfo(device="CPU", torch_version="x", threads=2, pid=os.getpid()), run_count=2)
    write_record(sample_record(id="new-01", label="a", **other), new / "01-a.json")
    events = follower.poll()
    assert [(type(e), e.run_id) for e in events] == [(RunStarted, "new-01")]
    assert events[0].run_count == 2
    write_record(sample_record(id="new-01", label="a", status="completed", **other), new / "01-a.json")
    write_record(sample_record(id="new-02", label="b", run_index=1, **other), new / "02-b.json")
    events = follower.poll()
    assert [(type(e).__name__, e.run_id) for e in events] == [("RunFinished", "new-01"), ("RunStarted", "new-02")]
    assert events[1].run_index == 1
    assert not follower.done  # run 2 of 2 is still going
    write_record(sample_record(id="new-02", label="b", run_index=1, status="interrupted", **other), new / "02-b.json")
    assert of_type(follower.poll(), RunFinished)[0].status == "interrupted"
    assert follower.done


def test_runs_written_at_once_are_followed_at_once(tmp_path: Path) -> None:
    """Runs trained in parallel (worker processes) write their files at the same time: each look at the folder
    brings the progress of every live run, not one run after the other."""
    from tuitrain.monitor import SweepMonitor

    folder = tmp_path / "20260102-100000-tiny-cccccc"
    folder.mkdir()
    runs = {
        folder / "01-a.json": sample_record(id="inv-01", label="a", run_count=2),
        folder / "02-b.json": sample_record(id="inv-02", label="b", run_index=1, run_count=2),
    }
    follower, monitor = Follower(folder), SweepMonitor()

    def advance(losses: int, finish: str = "") -> list[Event]:
        """Each running run trains `losses` more batches (`finish`: that one then completes) and saves."""
        for path, record in runs.items():
            if record.status == "running":
                record.batch_losses += [1.0 / (len(record.batch_losses) + 1)] * losses
                record.status = "completed" if record.id == finish else "running"
                write_record(record, path)
        events = follower.poll()
        for event in events:
            monitor.apply(event)
        return events

    events = advance(2)
    assert [(type(e).__name__, e.run_id) for e in events] == [
        ("RunStarted", "inv-01"),
        ("BatchLosses", "inv-01"),
        ("RunStarted", "inv-02"),
        ("BatchLosses", "inv-02"),
    ]
    assert [r.run_id for r in monitor.live] == ["inv-01", "inv-02"]
    for _ in range(3):  # both advance between two looks: both come in each look
        events = advance(1)
        assert {e.run_id for e in of_type(events, BatchLosses)} == {"inv-01", "inv-02"}
    events = advance(1, finish="inv-02")
    assert [(type(e).__name__, e.run_id) for e in events] == [
        ("BatchLosses", "inv-01"),
        ("BatchLosses", "inv-02"),
        ("RunFinished", "inv-02"),
    ]
    assert not follower.done and [r.run_id for r in monitor.live] == ["inv-01"]
    assert monitor.current.run_id == "inv-01"
    assert [e.run_id for e in advance(2)] == ["inv-01"]  # the other goes on alone
    assert [(type(e).__name__, e.run_id) for e in advance(0, finish="inv-01")] == [("RunFinished", "inv-01")]
    assert follower.done
    assert [len(monitor.runs[i].losses) for i in ("inv-01", "inv-02")] == [8, 6]


def test_missing_target_is_a_clear_error(tmp_path: Path) -> None:
    from tuitrain.core.errors import TuitrainError

    with pytest.raises(TuitrainError, match="no such run file or folder"):
        Follower(tmp_path / "nope")


# -- another process ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_headless_run_in_another_process_is_followed(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    follower = Follower(runs)  # started before the run: waits for its folder
    proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, stderr=subprocess.PIPE)
    try:
        events = follow_until(follower, lambda ev: follower.done, SUBPROCESS_TIMEOUT_S, [])
        assert proc.wait(timeout=SUBPROCESS_TIMEOUT_S) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    started = of_type(events, RunStarted)
    assert [(s.label, s.run_index, s.run_count) for s in started] == [
        ("activation=relu", 0, 2),
        ("activation=tanh", 1, 2),
    ]
    assert [(e.run_index, e.epoch) for e in of_type(events, EpochEnded)] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [f.status for f in of_type(events, RunFinished)] == ["completed", "completed"]
    assert steps_are_contiguous(events)
    assert len(losses_of(events, started[0].run_id)) == 2 * started[0].batches_per_epoch


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_training_process_shows_as_crashed(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    follower = Follower(runs)
    proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, "--epochs", "500")
    try:
        events = follow_until(follower, lambda ev: bool(of_type(ev, EpochEnded)), SUBPROCESS_TIMEOUT_S, [])
        assert not of_type(events, RunFinished)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()  # reaped: a zombie still answers kill(pid, 0)
    follow_until(follower, lambda ev: bool(of_type(ev, RunFinished)), 30, events)
    finished = of_type(events, RunFinished)
    assert [(f.label, f.status) for f in finished] == [("activation=relu", "crashed")]
    assert "process is gone" in finished[0].error
    assert follower.done  # no run will start after the writer died


@pytest.mark.subprocess
def test_follower_does_not_import_textual() -> None:
    code = "import sys, tuitrain.follow; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


@pytest.mark.subprocess
def test_a_detached_process_that_died_before_its_first_run_file_ends_the_watch(tmp_path: Path) -> None:
    import json
    import socket

    from tuitrain.follow import DETACHED_LOG, DETACHED_PID
    from tuitrain.session import new_invocation_dir

    _, folder = new_invocation_dir(tmp_path / "runs", "tiny")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / DETACHED_LOG).write_text("Preset tiny: …\ntuitrain: error: MNIST not found\n", encoding="utf-8")
    (folder / DETACHED_PID).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}), encoding="utf-8")
    follower = Follower(folder)
    texts = [e.text for e in follower.poll() if isinstance(e, LogMessage)]
    assert any("ended before writing a run file" in t and "MNIST not found" in t for t in texts)
    assert follower.done

    # while the process lives, the watcher keeps waiting
    (folder / DETACHED_PID).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    waiting = Follower(folder)
    waiting.poll()
    assert not waiting.done


def script_record(batch_size: int | None, status: str = "running", **kw) -> RunRecord:
    """A script run (a framework's logger) that logged its loss every 5 steps, steps 4, 9, ... 39; its first epoch (4
    points: 20 steps) took 4 s, the second is in progress."""
    from tuitrain.core.serieslog import Series
    from tuitrain.records import ScriptInfo

    first = EpochRecord(
        epoch=1,
        initial_loss=2.0,
        final_loss=1.0,
        mean_loss=1.5,
        test_loss=float("nan"),
        test_accuracy=None,
        test_correct=0,
        test_total=0,
        duration_s=4.0,
        samples_per_s=123.0,  # what the file says: not what a watcher shows (counted in points, not steps)
        eval_s=0.0,
        steps=4,
    )
    record = sample_record(
        preset="lightning",
        spec=RunSpec(epochs=2, batch_size=batch_size or 64),
        script=ScriptInfo(epochs=None, batch_size=batch_size),
        batches_per_epoch=None,
        train_size=None,
        test_size=None,
        epochs=[first],
        loss_series="train_loss",
        series_file="01-a.series",
        status=status,
        heartbeat_at=STARTED + timedelta(seconds=8),
        **kw,
    )
    record.attach_series({"train_loss": Series(np.arange(4, 40, 5), np.linspace(2.0, 0.5, 8))})
    return record


def test_a_script_runs_throughput_counts_its_steps_and_its_batch_size_where_said(tmp_path: Path) -> None:
    """A framework logs every n steps: its points are not batches; and its batch size is the script's to say."""
    events = RunTracker(tmp_path / "01-a.json").update(script_record(batch_size=16))
    batches = of_type(events, BatchLosses)
    # epoch 1: 20 steps in 4 s; epoch 2 so far: 20 steps in the 4 s since (8 s after the start)
    assert [(b.epoch, b.batch, b.samples_per_s, b.batch_size_known) for b in batches] == [
        (1, 20, 20 * 16 / 4.0, True),
        (2, 20, 20 * 16 / 4.0, True),
    ]
    (started,) = of_type(events, RunStarted)
    assert (started.epochs_known, started.batches_per_epoch, started.train_size, started.test_size) == (
        False,
        0,
        0,
        0,
    )
    assert of_type(events, EpochEnded)[0].epochs == 0  # open-ended while it trains: no planned total

    unknown = of_type(RunTracker(tmp_path / "01-a.json").update(script_record(batch_size=None)), BatchLosses)
    assert [(b.samples_per_s, b.batch_size_known) for b in unknown] == [(5.0, False), (5.0, False)]  # steps/s

    ended = RunTracker(tmp_path / "01-a.json").update(script_record(batch_size=None, status="completed"))
    assert of_type(ended, EpochEnded)[0].epochs == 2  # a finished run's epochs are what it trained


def test_a_run_that_says_its_config_after_starting_is_announced_again_before_its_first_step(tmp_path: Path) -> None:
    """A framework's logger may start its run file before it is handed the hyperparameters and the trainer's plan."""
    record = script_record(batch_size=None)
    bare = record.model_copy(update={"config": {}, "epochs": [], "batch_losses": []})
    bare.attach_series({})
    tracker = RunTracker(tmp_path / "01-a.json")
    assert [e.config for e in of_type(tracker.update(bare), RunStarted)] == [{}]
    said = bare.model_copy(update={"config": {"lr": 0.1}})
    assert [e.config for e in of_type(tracker.update(said), RunStarted)] == [{"lr": 0.1}]
    # its first steps come with the batch size its logger learnt meanwhile: not a new start
    first_steps = record.model_copy(update={"config": {"lr": 0.1}, "spec": RunSpec(epochs=2, batch_size=16)})
    first_steps.script = first_steps.script.model_copy(update={"batch_size": 16})
    first_steps.attach_series(record.series)
    events = tracker.update(first_steps)
    assert of_type(events, BatchLosses) and not of_type(events, RunStarted)
    # once steps were shown, a changed config is not a new start
    assert not of_type(tracker.update(record.model_copy(update={"config": {"lr": 0.2}})), RunStarted)
