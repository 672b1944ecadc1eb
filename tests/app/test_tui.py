"""The Textual app driven by Pilot, training tiny presets on synthetic data.

Waits are on conditions with generous timeouts (a loaded 2-core machine), never fixed sleeps
standing in for "long enough".
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import error_dialog_shown, lease_paused, wait_for
from tuitrain import format as fmt
from tuitrain.records import read_record
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens import home
from tuitrain.tui.screens.dialogs import ConfirmScreen
from tuitrain.tui.screens.help import HelpScreen
from tuitrain.tui.screens.home import HomeScreen
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.progress import ProgressPanel
from tuitrain.tui.widgets.too_small import TooSmall


@pytest.fixture
def slow_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two runs far too long to finish during a test: they are paused and stopped by keys. The app does not ask
    about their length first, whatever their estimate on a loaded machine (tests/app/test_long_cpu_run.py does)."""
    monkeypatch.setattr(home, "LONG_CPU_RUN_S", float("inf"))
    path = tmp_path / "slow.toml"
    path.write_text(
        """
name = "slow"
title = "Two long runs, stopped by the test"
[defaults]
model = "model_a"
epochs = 500
batch_size = 8
lr = 0.003
log_every = 2
device = "cpu"
[grid]
activation = ["relu", "tanh"]
""",
        encoding="utf-8",
    )
    return path


def run_files(runs_dir: Path) -> list[Path]:
    return sorted(runs_dir.rglob("*.json"))


def table_rows(table: EpochTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.mark.slow
async def test_start_preset_from_home_with_keys_and_wait_for_the_end(tiny_preset, mnist_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.done, "training to finish")
        rows = table_rows(screen.query_one(EpochTable))
        files = run_files(runs_dir)
        assert len(files) == 2
        records = [read_record(p) for p in files]
        assert [r.status for r in records] == ["completed", "completed"]
        # the table shows the assignment's rows of both runs, formatted as in the headless summary
        expected = [[r.label, *row] for r in records for row in fmt.epoch_rows(r)]
        assert rows == expected and len(rows) == 4
        assert "Finished (2 completed)" in str(screen.query_one(ProgressPanel).render())
        assert app.run_folders == [files[0].parent]  # printed whole on exit
        # both runs' losses reached the UI, every one of them
        assert [len(run.losses) for run in screen.monitor.runs.values()] == [len(r.batch_losses) for r in records]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
        home = app.screen
        await wait_for(pilot, lambda: len(home.run_files) == 2, "saved runs listed")
        # pick both saved runs with keys and open the comparison of them
        await pilot.press("tab", "space", "down", "space")
        assert sorted(home.selected_runs) == files
        await pilot.press("c")
        from tuitrain.tui.screens.compare import CompareScreen

        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")


@pytest.mark.slow
async def test_pause_resume_and_stop_current_run(slow_preset, mnist_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"slow": slow_preset}, jobs=1)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        control = screen.source.control
        await wait_for(pilot, lambda: screen.monitor.current and len(screen.monitor.current.losses) > 0, "first losses")
        await pilot.press("p")
        assert control.paused.is_set()
        assert "PAUSED" in str(screen.query_one(ProgressPanel).render())
        first = screen.monitor.current
        # the loop stops at the next batch boundary (its lease then says paused); after that no loss arrives
        await wait_for(pilot, lambda: lease_paused(first.run_id), "the loop to wait at a batch boundary")
        await pilot.pause()  # the losses it sent before it stopped, taken in
        seen = len(first.losses)
        await pilot.pause(0.5)
        assert len(first.losses) == seen
        await pilot.press("p")
        assert not control.paused.is_set()
        await wait_for(pilot, lambda: len(first.losses) > seen, "training to resume")
        await pilot.press("n")
        await wait_for(pilot, lambda: len(screen.monitor.runs) == 2, "the second run to start")
        assert first.status == "interrupted"
        second = screen.monitor.current
        await wait_for(pilot, lambda: len(second.losses) > 0, "the second run to train")
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.done, "stop all")
        statuses = [read_record(p).status for p in run_files(runs_dir)]
        assert statuses == ["interrupted", "interrupted"]


@pytest.mark.slow
async def test_runs_at_once_are_paused_and_stopped_one_by_one(slow_preset, mnist_dir, tmp_path):
    """Two runs in worker processes: p and n act on the highlighted run alone, x on both."""
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"slow": slow_preset}, jobs=2)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        monitor = screen.monitor
        await wait_for(pilot, lambda: len(monitor.live) == 2 and all(r.losses for r in monitor.live), "both runs")
        # the highlighted run is the one that started first: either, on a loaded machine
        first = monitor.current
        (second,) = [r for r in monitor.live if r is not first]
        await pilot.press("p")
        lines = str(screen.query_one(ProgressPanel).render()).splitlines()  # in run order, whichever is highlighted
        (first_line,) = [line for line in lines if first.label in line]
        (second_line,) = [line for line in lines if second.label in line]
        assert "PAUSED" in first_line and "PAUSED" not in second_line
        # the other run trains on while the paused one stops at its next batch (its lease then says paused; its
        # last chunk may still be on its way: the other run's next chunks come after it)
        await wait_for(pilot, lambda: lease_paused(first.run_id), "the paused run to wait at a batch boundary")
        seen = len(second.losses)
        await wait_for(pilot, lambda: len(second.losses) > seen + 20, "the other run to go on")
        paused_at = len(first.losses)
        seen = len(second.losses)
        await wait_for(pilot, lambda: len(second.losses) > seen + 20, "the other run to go on")
        assert len(first.losses) == paused_at
        await pilot.press("tab", "n")  # stop the second run only
        await wait_for(pilot, lambda: second.status == "interrupted", "the second run to stop")
        assert first.status == "running" and monitor.current is first
        await pilot.press("p")  # resumed
        await wait_for(pilot, lambda: len(first.losses) > paused_at, "the first run to go on")
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.done, "stop all")
    statuses = [read_record(p).status for p in run_files(runs_dir)]
    assert statuses == ["interrupted", "interrupted"]


@pytest.mark.slow
async def test_quit_while_training_asks_then_saves_the_run_as_interrupted(slow_preset, mnist_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    # opened straight on the preset, as `tuitrain --preset slow`
    app = TuitrainApp(preset="slow", runs_dir=runs_dir, data_dir=mnist_dir, presets={"slow": slow_preset}, jobs=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.monitor.current and len(screen.monitor.current.losses) > 0, "first losses")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, "back to training")
        assert not screen.source.control.stop_all.is_set()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
    files = run_files(runs_dir)
    assert len(files) == 1  # the second run never started
    record = read_record(files[0])
    assert record.status == "interrupted" and record.batch_losses


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
async def test_hangup_or_term_saves_the_run_as_interrupted_and_exits(slow_preset, mnist_dir, tmp_path, signum):
    """A dropped SSH session (SIGHUP) or a SIGTERM: no question, the run is saved as interrupted, exit 128+N."""
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(preset="slow", runs_dir=runs_dir, data_dir=mnist_dir, presets={"slow": slow_preset}, jobs=1)
    previous = signal.getsignal(signum)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.monitor.current and len(screen.monitor.current.losses) > 0, "first losses")
        os.kill(os.getpid(), signum)
        await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.signal_exit_code == 128 + signum
    assert signal.getsignal(signum) == previous  # handlers restored
    (path,) = run_files(runs_dir)
    record = read_record(path)
    assert record.status == "interrupted" and record.batch_losses


async def test_unknown_preset_is_a_clear_error_not_a_traceback(tmp_path):
    app = TuitrainApp(preset="no_such_preset", runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: error_dialog_shown(app), "the error dialog")
        assert "unknown preset 'no_such_preset'" in str(app.screen.query_one("#error-message").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "the home screen")


@pytest.mark.slow
async def test_missing_data_is_shown_then_back_home(tiny_preset, tmp_path):
    app = TuitrainApp(
        preset="tiny", runs_dir=tmp_path / "runs", data_dir=tmp_path / "no-data-here", presets={"tiny": tiny_preset}
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: error_dialog_shown(app), "the error dialog")
        assert "no-data-here" in str(app.screen.query_one("#error-message").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "the home screen")


async def test_tiny_terminal_asks_to_enlarge_then_recovers(tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        home = app.screen
        notice = home.query_one(TooSmall)
        table = home.query_one("#presets")
        assert home.has_class("too-small")
        assert notice.display and not table.display
        assert "enlarge" in str(notice.render())
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: not home.has_class("too-small"), "the normal layout")
        assert not notice.display and table.display


async def test_compare_key_without_selection_or_screen_says_so(tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("c")
        await wait_for(pilot, lambda: app.screen.query("Toast"), "the notification")
        (toast,) = app.screen.query("Toast")
        assert "Select runs to compare first" in str(toast.render())
        assert isinstance(app.screen, HomeScreen)


def test_help_screen_snapshot(snap_compare, tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})

    async def open_help(pilot):
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")

    assert snap_compare(app, run_before=open_help, terminal_size=(80, 24))
