"""The compare screen driven as a person would: include runs, pin a baseline, toggle hyperparameters."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, SelectionList, Static

from tests.compare_fixtures import chance_run, interrupted_run, normal_pair, write_runs
from tuitrain.tui.compare_app import CompareApp
from tuitrain.tui.screens.compare import CompareScreen


def table_cells(screen: CompareScreen) -> dict[str, list[str]]:
    table = screen.query_one("#compare-table", DataTable)
    return {str(row[0]): [str(c) for c in row[1:]] for row in (table.get_row_at(i) for i in range(table.row_count))}


def headers(screen: CompareScreen) -> list[str]:
    return [str(c.label) for c in screen.query_one("#compare-table", DataTable).columns.values()][1:]


async def test_compare_screen_select_pin_toggle(tmp_path: Path) -> None:
    paths = write_runs(tmp_path / "runs", [*normal_pair(), chance_run(), interrupted_run()])
    broken = tmp_path / "runs" / "broken.json"
    broken.write_text('{"schema_version": 1')
    app = CompareApp([*paths, broken])
    async with app.run_test(size=(140, 45)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert headers(screen) == ["relu", "tanh", "lr=0.1", "sigmoid"]
        assert "1 unreadable" in str(screen.query_one("#compare-title", Static).render())
        assert "broken.json" in str(screen.query_one("#compare-unreadable", Static).render())
        observations = str(screen.query_one("#compare-observations", Static).render())
        assert "lr=0.1 is stuck at chance level" in observations

        # leave the chance-level run out: its column and its observation go
        await pilot.press("down", "down", "space")
        await pilot.pause()
        assert headers(screen) == ["relu", "tanh", "sigmoid"]
        assert "stuck" not in str(screen.query_one("#compare-observations", Static).render())
        assert screen.query_one("#compare-runs", SelectionList).selected == [1, 2, 4]

        # pin tanh as the baseline: the others show deltas against it
        await pilot.press("up", "b")
        await pilot.pause()
        assert headers(screen) == ["relu", "tanh ★", "sigmoid"]
        cells = table_cells(screen)
        assert cells["Best test acc"] == ["98.20% (-0.40)", "98.60%", "91.00% (-7.60)"]
        assert "baseline tanh" in str(screen.query_one("#compare-title", Static).render())

        # all hyperparameters, then back to those that differ
        assert "batch_size" not in table_cells(screen)
        await pilot.press("a")
        await pilot.pause()
        assert table_cells(screen)["batch_size"] == ["64", "64", "64"]
        await pilot.press("a")
        await pilot.pause()
        assert "batch_size" not in table_cells(screen)

        # a higher threshold: tanh reaches 98% at epoch 2, relu at epoch 3
        await pilot.press("t")
        await pilot.pause()
        assert table_cells(screen)["First epoch ≥ 98%"][:2] == ["3 (+1)", "2"]

        # the per-epoch table has a loss and an accuracy column per shown run
        epochs = screen.query_one("#epoch-table", DataTable)
        assert len(epochs.columns) == 1 + 2 * 3
        assert [str(c) for c in epochs.get_row_at(0)][:3] == ["1", "2.3000 → 0.3000", "96.00%"]

        await pilot.press("escape")
        await pilot.pause()
    assert app.return_code == 0  # Back closed the compare app
    assert broken.read_text() == '{"schema_version": 1'  # never rewritten


async def test_compare_screen_pushed_over_another_screen_goes_back(tmp_path: Path) -> None:
    paths = write_runs(tmp_path / "runs", normal_pair())
    from textual.app import App

    class Host(App):
        pass

    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(CompareScreen(paths))
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        assert headers(app.screen) == ["relu", "tanh"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)
        assert app.is_running


async def test_compare_screen_with_only_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "notarun.json"
    bad.write_text('{"hello": 1}')
    app = CompareApp([bad, tmp_path / "missing.json"])
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert headers(screen) == []
        text = str(screen.query_one("#compare-unreadable", Static).render())
        assert "not a tuitrain run record" in text and "missing.json" in text
        await pilot.press("b", "a", "t", "space")  # nothing to act on: no crash
        await pilot.pause()
        assert "0 of 0 run(s) shown · 2 unreadable" in str(screen.query_one("#compare-title", Static).render())
