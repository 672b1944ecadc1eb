"""The run screen's confusion matrix (c): the highlighted run's latest, and a word instead for runs without one
(script runs, files from before it was recorded)."""

from __future__ import annotations

from dataclasses import replace

from tests.app.scripted import ScriptedSource, two_runs_mid_training
from tests.helpers import wait_for
from tuitrain.core.events import EpochEnded
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.confusion import ConfusionPanel
from tuitrain.tui.widgets.epoch_table import EpochTable


async def shown_screen(app: TuitrainApp, pilot, source: ScriptedSource) -> RunScreen:
    app.push_screen(RunScreen(source))
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
    screen = app.screen
    assert isinstance(screen, RunScreen)
    await wait_for(
        pilot, lambda: source.delivered.is_set() and screen.query_one(EpochTable).row_count == 4, "the events"
    )
    return screen


def panel_text(screen: RunScreen) -> str:
    return str(screen.query_one(ConfusionPanel).render())


async def test_c_toggles_the_highlighted_runs_matrix_and_the_charts(tmp_path) -> None:
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_mid_training())
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await shown_screen(app, pilot, source)
            charts, panel = screen.query_one("#charts"), screen.query_one(ConfusionPanel)
            assert charts.display and not panel.display
            await pilot.press("c")
            await pilot.pause()
            assert panel.display and not charts.display
            text = panel_text(screen)
            assert "activation=tanh · epoch 1 of 3" in text  # the highlighted run: the one training
            assert "Most confused: 4 taken for 9: 7 times." in text
            await pilot.press("c")
            await pilot.pause()
            assert charts.display and not panel.display
    finally:
        source.stop()


async def test_runs_without_a_matrix_say_so(tmp_path) -> None:
    events = [replace(e, confusion=None) if isinstance(e, EpochEnded) else e for e in two_runs_mid_training()]
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(events)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await shown_screen(app, pilot, source)
            await pilot.press("c")
            await pilot.pause()
            assert "activation=tanh records no confusion matrix" in panel_text(screen)
    finally:
        source.stop()
