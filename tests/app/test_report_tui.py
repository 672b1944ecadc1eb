"""The compare screen with runs repeated across seeds: one mean line per group with fainter min and max
lines, and the key that writes the report of the runs shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual_plotext import PlotextPlot

from tests.compare_fixtures import seeded_runs, write_runs
from tests.helpers import wait_for
from tuitrain.compare import accuracy_curve
from tuitrain.tui.compare_app import CompareApp
from tuitrain.tui.screens.compare import CompareScreen


async def test_groups_drawn_as_mean_with_min_and_max(tmp_path: Path) -> None:
    app = CompareApp(write_runs(tmp_path / "runs", seeded_runs()))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        lines = screen.chart_series(screen.shown(), accuracy_curve)
        assert len(lines) == 9  # three groups: min, max and mean each
        low, high, mean = lines[:3]
        relu = [r for r in screen.shown().runs if r.record.spec.activation == "relu"]
        at_one = [r.record.epochs[0].test_accuracy for r in relu]
        assert (low[1][0], high[1][0]) == (min(at_one), max(at_one))
        assert mean[1][0] == pytest.approx(sum(at_one) / 3)
        assert mean[2].colour == screen.run_styles[relu[0].index].colour
        assert low[2].colour != mean[2].colour  # fainter
        assert "mean of seeds" in str(screen.query_one("#compare-acc", PlotextPlot).border_title)


async def test_report_key_writes_the_report_of_the_shown_runs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    folder = tmp_path / "runs"
    app = CompareApp(write_runs(folder, seeded_runs()))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("down", "space")  # leave relu seed 1 out
        await pilot.press("r")
        await wait_for(pilot, lambda: (folder / "report.md").is_file(), "the report")
        await app.workers.wait_for_complete()
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert "**activation=relu (n=2, seeds 0,2)**" in text
    assert (folder / "report-figures" / "1-accuracy.png").is_file()
