"""Snapshots of the screens at 80x24, fed by fixed data only: scripted engine events (no training,
no clocks), hand-made run files with fixed dates shown in UTC, a fixed device name and estimate.

Update with `pytest tests/app/test_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tests.app.scripted import ScriptedSource, two_runs_at_once, two_runs_mid_training
from tests.compare_fixtures import chance_run, interrupted_run, normal_pair, write_runs
from tests.helpers import wait_for
from tuitrain.records import read_record, write_record
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.compare_app import CompareApp
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.epoch_table import EpochTable

SIZE = (80, 24)


@pytest.fixture
def fixed_world(monkeypatch):
    """Dates in UTC; the device and the estimates as on a fixed machine (no torch calibration)."""
    import tuitrain.session

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (2 threads)")
    monkeypatch.setattr(tuitrain.session, "estimated_seconds", lambda specs, **kw: 95.0)
    monkeypatch.setattr(tuitrain.session, "machine_cores", lambda: 2)  # what --jobs auto resolves to
    yield
    monkeypatch.undo()
    time.tzset()


def saved_runs(folder: Path) -> Path:
    write_runs(folder, [*normal_pair(), chance_run(), interrupted_run()])
    (folder / "05-broken.json").write_text('{"schema_version": 1')
    return folder


def scripted_run_screen(app: TuitrainApp, source: ScriptedSource, epochs: int, keys: tuple[str, ...] = ()):
    """A run-before for snap_compare: the run screen once the scripted events are in, `epochs` table rows drawn,
    `keys` pressed, and the charts and progress lines redrawn."""

    async def shown(pilot):
        app.push_screen(RunScreen(source))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(
            pilot,
            lambda: source.delivered.is_set() and screen.query_one(EpochTable).row_count == epochs,
            "the scripted events",
        )
        await pilot.press(*keys)
        await wait_for(
            pilot,
            lambda: not (screen.loss_dirty or screen.accuracy_dirty or screen.progress_dirty),
            "the charts to draw",
        )
        await pilot.pause()

    return shown


def test_run_screen_mid_training_snapshot(snap_compare, tmp_path, fixed_world):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_mid_training())
    try:
        assert snap_compare(app, run_before=scripted_run_screen(app, source, epochs=4), terminal_size=SIZE)
    finally:
        source.stop()


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_run_screen_two_runs_at_once_snapshot(snap_compare, tmp_path, size):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_at_once(), parallel=True, title="demo — Two scripted runs, both at once")
    try:
        assert snap_compare(app, run_before=scripted_run_screen(app, source, epochs=1), terminal_size=size)
    finally:
        source.stop()


def test_run_screen_with_a_waiting_run_and_a_paused_one_snapshot(snap_compare, tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    title = "demo — Three scripted runs, two at once"
    source = ScriptedSource(two_runs_at_once(3), parallel=True, title=title)
    # run 2 highlighted and paused
    shown = scripted_run_screen(app, source, epochs=1, keys=("tab", "p"))
    try:
        assert snap_compare(app, run_before=shown, terminal_size=(120, 40))
    finally:
        source.stop()


def test_home_screen_snapshot(snap_compare, tmp_path, tiny_preset, fixed_world):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "broken"\ntitle = "x"\n[defaults]\nmodel = "model_a"\nwarp = 9\n')
    app = TuitrainApp(runs_dir=saved_runs(tmp_path / "runs"), presets={"tiny": tiny_preset, "broken": broken})

    async def loaded(pilot):
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#runs", DataTable).row_count == 5, "the saved runs")
        await wait_for(
            pilot,
            lambda: str(screen.query_one("#presets", DataTable).get_cell("tiny", "time")) == "1m35s",
            "the estimate",
        )
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, run_before=loaded, terminal_size=SIZE)


def test_home_screen_with_the_runs_filter_open_snapshot(snap_compare, tmp_path, tiny_preset, fixed_world, monkeypatch):
    """`/` then `tag:base`: the filter under the runs' heading, the tagged runs only, how many match of all."""
    monkeypatch.chdir(tmp_path)  # the highlighted run's path, shown under the runs, the same on every machine
    folder = saved_runs(Path("runs"))
    for path in sorted(folder.glob("0[12]-*.json")):
        record = read_record(path)
        record.tags = ["baseline"]
        write_record(record, path)
    app = TuitrainApp(runs_dir=folder, presets={"tiny": tiny_preset})

    async def filtered(pilot):
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#runs", DataTable).row_count == 5, "the saved runs")
        await wait_for(
            pilot,
            lambda: str(screen.query_one("#presets", DataTable).get_cell("tiny", "time")) == "1m35s",
            "the estimate",
        )
        await app.workers.wait_for_complete()
        await pilot.press("tab", "slash", *"tag:base")
        await wait_for(pilot, lambda: screen.query_one("#runs", DataTable).row_count == 2, "the filtered runs")
        await pilot.pause()

    assert snap_compare(app, run_before=filtered, terminal_size=SIZE)


@pytest.mark.parametrize("view", ["1", "2"])
def test_compare_screen_snapshot(snap_compare, tmp_path, view):
    folder = saved_runs(tmp_path / "runs")
    app = CompareApp(sorted(folder.glob("0[1-4]-*.json")))

    async def loaded(pilot):
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press(view)
        await pilot.pause()

    assert snap_compare(app, run_before=loaded, terminal_size=SIZE)


def test_run_screen_with_the_confusion_matrix_snapshot(snap_compare, tmp_path, fixed_world):
    """c shows the highlighted run's latest confusion matrix in the charts' place, readable at 80x24."""
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_mid_training())
    try:
        shown = scripted_run_screen(app, source, epochs=4, keys=("c",))
        assert snap_compare(app, run_before=shown, terminal_size=SIZE)
    finally:
        source.stop()
