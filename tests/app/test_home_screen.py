"""The home screen: what it shows of the command line's settings and of labels from files anyone can write, and
that no core lease outlives the runs the app trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from tests.compare_fixtures import make_record
from tests.helpers import wait_for
from tuitrain.core.cache import cache_dir
from tuitrain.core.cores import Holder
from tuitrain.records import write_record
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.home import HomeScreen
from tuitrain.tui.screens.run import RunScreen


async def test_the_command_lines_settings_are_shown_for_every_preset(tiny_preset: Path, tmp_path: Path) -> None:
    """`tuitrain --preset lr_sweep --epochs 2`, then Esc: the home screen says that --epochs 2 still holds."""
    app = TuitrainApp(
        runs_dir=tmp_path / "runs", presets={"tiny": tiny_preset}, overrides={"epochs": 3, "seeds": [0, 1]}
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        note = app.screen.query_one("#overrides", Static)
        assert note.display
        assert str(note.render()) == "From the command line, for every preset here: --epochs 3 --seeds 0,1"
        assert str(app.screen.query_one("#presets", DataTable).get_row("tiny")[1]) == "4"  # 2 activations x 2 seeds


async def test_without_settings_on_the_command_line_no_note_shows(tiny_preset: Path, tmp_path: Path) -> None:
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert not app.screen.query_one("#overrides", Static).display


async def test_control_characters_in_a_label_are_escaped_as_the_cli_prints_them(tmp_path: Path) -> None:
    """A label holding an escape sequence and a newline: shown escaped (evil\\x1b[31mRED\\nsecond), not stripped to
    'evilRED' with the text after the newline dropped."""
    runs = tmp_path / "runs"
    (runs / "inv").mkdir(parents=True)
    write_record(
        make_record("evil\x1b[31mRED\nsecond", [90.0], [(1.0, 0.5, 0.7)], preset="p\x07"), runs / "inv" / "01.json"
    )
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(120, 30)) as pilot:
        home = app.screen
        await wait_for(pilot, lambda: home.run_files, "the saved run")
        await pilot.pause()
        cells = [str(c) for c in home.query_one("#runs", DataTable).get_row_at(0)]
        assert cells[-1] == "evil\\x1b[31mRED\\nsecond"
        assert cells[2] == "p\\x07"


def leases() -> list[Holder]:
    return [h for h in (Holder.read(p) for p in (cache_dir() / "cores").glob("*.json")) if h is not None]


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "worker-processes"])
async def test_no_core_lease_outlives_the_runs_of_the_app(
    tiny_preset: Path, mnist_dir: Path, tmp_path: Path, jobs: int
) -> None:
    """After the app trained a preset (in this process, or in worker processes) and went home, the registry holds
    no lease: a run started elsewhere then has every core."""
    app = TuitrainApp(
        preset="tiny", runs_dir=tmp_path / "runs", data_dir=mnist_dir, presets={"tiny": tiny_preset}, jobs=jobs
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.done, "training to finish")
        assert leases() == []
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "the home screen")
        home = app.screen
        await wait_for(pilot, lambda: len(home.estimated) == len(home.presets), "the estimates")
        assert leases() == []
