"""The home screen's housekeeping of saved runs: `/` filters them, d trashes (after asking) and u brings back, l, t
and n rename, tag and annotate; a live run is refused. Run files built here, no training."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from textual.widgets import DataTable, Input, Static

from tests.compare_fixtures import chance_run, interrupted_run, make_record, normal_pair, write_runs
from tests.helpers import error_dialog_shown, wait_for
from tuitrain.records import EnvInfo, read_record, write_record
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.dialogs import ConfirmScreen, TextInputScreen
from tuitrain.tui.screens.home import HomeScreen

FOLDER = "20260101-120000-fixture-abc123"


def saved(tmp_path: Path) -> tuple[Path, list[Path]]:
    runs = tmp_path / "runs"
    paths = write_runs(runs / FOLDER, [*normal_pair(), chance_run(), interrupted_run()])
    for path in paths:
        path.with_name(path.stem + ".ckpt.pt").write_bytes(b"checkpoint")
    record = read_record(paths[0])
    record.tags = ["baseline"]
    write_record(record, paths[0])
    return runs, paths


def labels(home: HomeScreen) -> list[str]:
    table = home.query_one("#runs", DataTable)
    return [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]


async def loaded(pilot, count: int) -> HomeScreen:
    home = pilot.app.screen
    await wait_for(pilot, lambda: home.query_one("#runs", DataTable).row_count == count, "the saved runs")
    await pilot.press("tab")  # to the saved runs
    return home


async def test_slash_filters_by_text_tag_and_status_and_esc_clears(tmp_path: Path) -> None:
    runs, _ = saved(tmp_path)
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = await loaded(pilot, 4)
        await pilot.press("slash", *"tag:base")
        await wait_for(pilot, lambda: labels(home) == ["relu"], "the tagged run only")
        assert "1 of 4 match" in str(home.query_one("#runs-title", Static).render())
        home.query_one("#runs-filter", Input).value = "status:interrupted"
        await wait_for(pilot, lambda: len(labels(home)) == 1 and labels(home) != ["relu"], "the interrupted run")
        home.query_one("#runs-filter", Input).value = "tanh"
        await wait_for(pilot, lambda: labels(home) == ["tanh"], "the run whose label has the word")
        await pilot.press("enter")  # keeps the filter, back in the table
        await wait_for(pilot, lambda: home.focused is home.query_one("#runs", DataTable), "the table focused")
        assert labels(home) == ["tanh"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(labels(home)) == 4, "every run again")
        assert not home.query_one("#runs-filter", Input).display


async def test_d_asks_then_trashes_the_selection_and_u_brings_it_back(tmp_path: Path) -> None:
    runs, paths = saved(tmp_path)
    before = sorted(p.name for p in (runs / FOLDER).iterdir())
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = await loaded(pilot, 4)
        await pilot.press("space", "down", "space", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert "Move 2 run(s) to the trash" in app.screen.question
        await pilot.press("n")  # no: nothing moves
        await wait_for(pilot, lambda: app.screen is home, "back home")
        assert sorted(p.name for p in (runs / FOLDER).iterdir()) == before
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: len(labels(home)) == 2, "the two runs gone from the list")
        trash = runs / ".trash" / FOLDER
        assert sorted(p.name for p in trash.iterdir()) == sorted(
            name for p in paths[:2] for name in (p.name, p.stem + ".ckpt.pt")
        )
        await pilot.press("u")
        await wait_for(pilot, lambda: len(labels(home)) == 4, "the runs back")
        assert sorted(p.name for p in (runs / FOLDER).iterdir()) == before
        assert not (runs / ".trash").exists()


async def test_a_live_run_is_not_trashed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record = make_record("live", [90.0], [(1.0, 0.5, 0.7)], status="running")
    record.env = EnvInfo(device="CPU", torch_version="2.0", threads=1, host=socket.gethostname(), pid=os.getpid())
    record.started_at = record.heartbeat_at = datetime.now(timezone.utc)
    (path,) = write_runs(runs / FOLDER, [record])
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, 1)
        await pilot.press("d")
        await wait_for(pilot, lambda: error_dialog_shown(app), "the refusal")
        assert "is live" in str(app.screen.query_one("#error-message", Static).render())
        await pilot.press("t")  # the dialog is on top: t does nothing below it
        assert path.is_file() and not (runs / ".trash").exists()


async def test_l_t_and_n_rename_tag_and_annotate(tmp_path: Path) -> None:
    runs, paths = saved(tmp_path)
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = await loaded(pilot, 4)
        first = Path(str(home.query_one("#runs", DataTable).coordinate_to_cell_key((0, 0))[0].value))
        spec = read_record(first).spec
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, TextInputScreen), "the label dialog")
        app.screen.query_one(Input).value = "my run"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "my run" in labels(home), "the new label listed")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TextInputScreen), "the tags dialog")
        await pilot.press(*"fast -baseline", "enter")
        await wait_for(pilot, lambda: read_record(first).tags == ["fast"], "the tags written")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, TextInputScreen), "the note dialog")
        await pilot.press(*"lr too high", "enter")
        await wait_for(pilot, lambda: read_record(first).notes == "lr too high", "the note written")
        record = read_record(first)
        assert (record.label, record.original_label, record.spec) == ("my run", first.stem[3:], spec)
