"""Watching, in the app, runs that another process trains: the same run screen fed by run files.

The training runs headless in a subprocess; waits are on conditions with generous timeouts (a
loaded 2-core machine), never fixed sleeps standing in for "long enough".
"""

from __future__ import annotations

import os
import signal
import struct

import pytest

from tests.helpers import start_headless, wait_for
from tuitrain import format as fmt
from tuitrain.cli import main
from tuitrain.follow import Follower
from tuitrain.records import read_record
from tuitrain.remote_control import read_state
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.home import LIVE, HomeScreen
from tuitrain.tui.screens.run import CONTROLLING_NOTE, WATCHING_NOTE, RunScreen
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.progress import ProgressPanel

TIMEOUT_S = 180.0


def table_rows(table: EpochTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def progress_text(screen: RunScreen) -> str:
    return str(screen.query_one(ProgressPanel).render())


@pytest.mark.slow
@pytest.mark.subprocess
async def test_watch_shows_epochs_arriving_from_another_process(tiny_preset, mnist_dir, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    epochs = 20  # long enough that the first epochs arrive well before the other process ends
    proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, "--epochs", str(epochs))
    try:
        app = TuitrainApp(runs_dir=runs, presets={"tiny": tiny_preset}, watch=runs)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            screen = app.screen
            assert isinstance(screen.source, Follower) and screen.watching
            await wait_for(pilot, lambda: CONTROLLING_NOTE in progress_text(screen), "the note, once a run shows")
            table = screen.query_one(EpochTable)
            await wait_for(pilot, lambda: table.row_count >= 1, "the first epoch")
            assert proc.poll() is None  # it arrived while the other process was still training
            # its trainer takes requests: the keys that pause and stop it show (test_watch_controls presses them)
            assert all(screen.check_action(a, ()) for a in ("pause", "stop_run", "stop_all"))
            await wait_for(pilot, lambda: screen.done, "both runs to end")
            await wait_for(pilot, lambda: not screen.check_action("pause", ()), "the keys to hide once it ended")
            assert proc.wait(timeout=TIMEOUT_S) == 0
            records = [read_record(p) for p in sorted(runs.rglob("*.json"))]
            expected = [[r.label, *row] for r in records for row in fmt.epoch_rows(r)]
            assert table_rows(table) == expected and len(expected) == 2 * epochs
            assert [len(run.losses) for run in screen.monitor.runs.values()] == [len(r.batch_losses) for r in records]
            assert [r.status for r in screen.monitor.runs.values()] == ["completed", "completed"]
            assert "Finished" in progress_text(screen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.subprocess
async def test_live_run_on_home_opens_the_watch_view_and_a_killed_run_shows_crashed(tiny_preset, mnist_dir, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    app = TuitrainApp(runs_dir=runs, presets={"tiny": tiny_preset})
    proc = None
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            home = app.screen
            assert isinstance(home, HomeScreen)
            proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, "--epochs", "500")
            runs_table = home.query_one("#runs")

            def first_status() -> str:
                return str(runs_table.get_cell(runs_table.coordinate_to_cell_key((0, 0)).row_key, "status"))

            def live_row() -> bool:
                return runs_table.row_count > 0 and first_status() == LIVE

            await wait_for(pilot, live_row, "the home screen to list the new run as live")  # without a key press
            runs_table.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the watch view")
            screen = app.screen
            assert screen.watching and screen.source.folder == next(runs.iterdir())
            await wait_for(
                pilot, lambda: screen.monitor.current is not None and screen.monitor.current.losses, "losses"
            )
            # leaving a watch view is allowed at any time and stops following (the run goes on)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is home, "back on the home screen")
            await wait_for(pilot, lambda: screen.feed_worker.is_finished, "the follower to stop")
            assert proc.poll() is None
            runs_table.focus()
            await pilot.press("enter")
            await wait_for(
                pilot, lambda: isinstance(app.screen, RunScreen) and app.screen is not screen, "the watch view again"
            )
            screen = app.screen
            table = screen.query_one(EpochTable)
            await wait_for(pilot, lambda: table.row_count >= 1, "an epoch")
            proc.send_signal(signal.SIGKILL)
            proc.wait()  # reaped: a zombie still answers kill(pid, 0)
            await wait_for(pilot, lambda: screen.done, "the watch to notice the dead process")
            assert [r.status for r in screen.monitor.runs.values()] == ["crashed"]
            assert "Finished" in progress_text(screen) and "crashed" in progress_text(screen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is home and not live_row(), "the home screen to show it crashed")
            assert first_status() == "crashed"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def test_watch_command_checks_its_target(tmp_path, capsys):
    assert main(["watch", str(tmp_path / "nowhere")]) == 2
    assert "no such run file or folder" in capsys.readouterr().err


def test_watch_no_ui_prints_a_finished_run(tiny_preset, mnist_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "--preset",
                str(tiny_preset),
                "--no-ui",
                "--data-dir",
                str(mnist_dir),
                "--runs-dir",
                str(runs),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["watch", str(runs), "--no-ui"]) == 0
    out = capsys.readouterr().out
    assert "=== Run 1/2: activation=relu" in out and "=== Run 2/2: activation=tanh" in out
    assert out.count("Test set: Average loss:") == 2
    assert "Run activation=tanh: completed" in out


async def test_watch_follows_a_script_run_live(tmp_path, monkeypatch):
    """A run that a script logs through tuitrain.init shows like a preset run: progress, epochs as they end,
    and a column per extra metric."""
    from tuitrain import script

    monkeypatch.setattr(script, "PERSIST_EVERY_S", 0.0)  # every read-back saved: the test drives each step
    runs = tmp_path / "runs"
    run = script.init(label="my script", config={"lr": 0.1}, runs_dir=runs, epochs=2, batches_per_epoch=4, read_every=2)
    for value in (2.0, 1.5, 1.2, 1.0):
        run.log(value)
    app = TuitrainApp(runs_dir=runs, watch=runs)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: "my script" in progress_text(screen), "the run's progress")
        assert "lr=0.1" in progress_text(screen)  # its config, not a preset's spec
        assert not screen.done
        # a script's run takes no requests: its note says so, and the keys that pause and stop stay hidden
        assert WATCHING_NOTE in progress_text(screen)
        assert not any(screen.check_action(a, ()) for a in ("pause", "stop_run", "stop_all"))
        table = screen.query_one(EpochTable)
        run.log_epoch(test_accuracy=60.0, test_loss=0.9, lr=0.1)
        await wait_for(pilot, lambda: table.row_count == 1, "the first epoch")
        assert "metric:lr" in [str(k.value) for k in table.columns]
        for value in (0.9, 0.8, 0.7, 0.6):
            run.log(value)
        run.log_epoch(test_accuracy=80.0, test_loss=0.5, lr=0.05)
        run.finish()
        await wait_for(pilot, lambda: screen.done, "the run to end")
        assert table_rows(table) == [
            ["my script", "1", "2.0000", "1.0000", "60.00%", "0.1"],
            ["my script", "2", "0.9000", "0.6000", "80.00%", "0.05"],
        ]


async def test_home_screen_given_a_tensorboard_folder_lists_and_watches_its_live_run(tmp_path):
    pytest.importorskip("google_crc32c", reason="tuitrain[tensorboard]")
    SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
    logs = tmp_path / "logs"
    writer = SummaryWriter(str(logs / "version_0"))  # this process writes: a live writer
    for step in range(5):
        writer.add_scalar("train_loss", 1.0 / (step + 1), step)
    writer.flush()
    try:
        app = TuitrainApp(runs_dir=logs, presets={})
        async with app.run_test(size=(100, 30)) as pilot:
            home = app.screen
            assert isinstance(home, HomeScreen)
            runs_table = home.query_one("#runs")

            def live_row() -> bool:
                if runs_table.row_count == 0:
                    return False
                row = runs_table.coordinate_to_cell_key((0, 0)).row_key
                return str(runs_table.get_cell(row, "status")) == LIVE

            await wait_for(pilot, live_row, "the home screen to list the log folder as a live run")
            runs_table.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the watch view")
            screen = app.screen
            assert screen.watching and screen.source.tensorboard
            await wait_for(pilot, lambda: screen.monitor.current is not None, "the run")
            await wait_for(pilot, lambda: len(screen.monitor.current.losses) == 5, "its five points")
            writer.add_scalar("train_loss", 0.1, 5)
            writer.flush()
            await wait_for(pilot, lambda: len(screen.monitor.current.losses) == 6, "the point appended live")
    finally:
        writer.close()


@pytest.mark.slow
@pytest.mark.subprocess
async def test_watch_keys_pause_and_stop_the_runs_of_another_process(tiny_preset, mnist_dir, tmp_path):
    """p, n and x on a watched run ask its trainer (remote_control); the screen shows what the trainer then says,
    and the run files record it as the trainer's own keys would."""
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, "--epochs", "500")
    try:
        app = TuitrainApp(runs_dir=runs, presets={"tiny": tiny_preset}, watch=runs)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            screen = app.screen

            def training() -> bool:
                run = screen.monitor.current
                return screen.remote_live and run is not None and run.status == "running" and bool(run.losses)

            await wait_for(pilot, training, "a run whose trainer takes requests")
            folder = screen.source.folder
            first = screen.monitor.current.run_id
            await pilot.press("p")
            await wait_for(pilot, lambda: "PAUSED" in progress_text(screen), "the trainer to say the run is paused")
            assert read_state(folder).paused == [first]  # what the screen shows is the trainer's word
            await pilot.press("p")
            await wait_for(pilot, lambda: "PAUSED" not in progress_text(screen), "the trainer to say it goes on")
            assert read_state(folder).paused == []
            await pilot.press("n")  # that run alone: the sweep goes on with the next

            def next_run_trains() -> bool:
                return screen.monitor.runs[first].status == "interrupted" and any(
                    r.run_id != first for r in screen.monitor.live
                )

            await wait_for(pilot, next_run_trains, "the first run to stop and the next to start")
            assert proc.poll() is None
            await pilot.press("x")
            await wait_for(pilot, lambda: screen.done, "every run to end")
            assert proc.wait(timeout=TIMEOUT_S) == 1  # stopped early: not every run completed
            records = [read_record(p) for p in sorted(folder.glob("*.json"))]
            assert [r.status for r in records] == ["interrupted", "interrupted"]
            assert [r.status for r in screen.monitor.runs.values()] == ["interrupted", "interrupted"]
            assert "Finished (2 interrupted)" in progress_text(screen)
    finally:
        proc.kill()
        proc.wait()


async def test_a_tensorboard_log_gets_no_empty_accuracy_chart(tmp_path):
    """A log has no epochs, so no accuracy per epoch: the right-hand chart draws another series it logged, or
    leaves its room to the loss chart when it logged the loss only."""
    pytest.importorskip("google_crc32c", reason="tuitrain[tensorboard]")
    proto = pytest.importorskip("tensorboard.compat.proto.event_pb2", reason="writes event files")
    from tensorboard.compat.proto import summary_pb2

    from tuitrain.core.tfevents import masked_crc32c
    from tuitrain.tui.widgets.charts import AccuracyChart, LossChart

    def framed(step: int, tag: str, value: float) -> bytes:
        summary = summary_pb2.Summary(value=[{"tag": tag, "simple_value": value}])
        data = proto.Event(wall_time=1.0e9 + step, step=step, summary=summary).SerializeToString()
        length = struct.pack("<Q", len(data))
        return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))

    for name, extra in (("with_lr", True), ("loss_only", False)):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "events.out.tfevents.1000000000.otherhost.123.0"  # another host's, long ago: ended
        records = [framed(step, "train_loss", 1.0 / (step + 1)) for step in range(0, 50, 5)]
        records.append(framed(0, "hp_metric", -1.0))  # Lightning's placeholder: one point, no line to draw
        if extra:
            records += [framed(step, "lr", 0.1 * 0.9**step) for step in range(0, 50, 5)]
        path.write_bytes(b"".join(records))
        os.utime(path, (1.0e9 + 50, 1.0e9 + 50))

    app = TuitrainApp(runs_dir=tmp_path, watch=tmp_path / "with_lr")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the log")
        screen = app.screen
        chart = screen.query_one(AccuracyChart)
        await wait_for(pilot, lambda: chart.border_title == "lr per step", "the log's other series")
        assert chart.display and not screen.has_class("loss-only")
        assert screen.monitor.epoch_metrics() == []  # the picker offers no accuracy per epoch either

    app = TuitrainApp(runs_dir=tmp_path, watch=tmp_path / "loss_only")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the log")
        screen = app.screen
        await wait_for(pilot, lambda: screen.has_class("loss-only"), "the loss chart alone")
        chart = screen.query_one(AccuracyChart)
        assert "accuracy" not in str(chart.border_title or "").lower()
        await pilot.pause()
        assert screen.query_one(LossChart).size.width > 90  # the whole width
