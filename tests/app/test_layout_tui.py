"""What a person sees at 80x24 and in smaller terminals: size changes across screens, saved runs'
columns, unreadable files, run colours and legends, the compare views, keys and help.

Run screens here are fed by a scripted event source (tests/app/scripted.py): no training, no clocks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Footer, Static, TabbedContent
from textual.widgets._footer import FooterKey

from tests.app.scripted import ScriptedSource, run_events, two_runs_at_once, two_runs_mid_training
from tests.compare_fixtures import chance_run, grid_runs, make_record, normal_pair, write_runs
from tests.helpers import wait_for
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.compare_app import CompareApp
from tuitrain.tui.screens.compare import CompareScreen
from tuitrain.tui.screens.help import HelpScreen, help_text
from tuitrain.tui.screens.home import preset_problem
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.charts import (
    ACCURACY_TICKS,
    PALETTE,
    AccuracyChart,
    LossChart,
    accuracy_range,
    round_ticks,
    run_style,
)
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.progress import ProgressPanel
from tuitrain.tui.widgets.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmall

LONG_REASON = "not a tuitrain run record: " + "field required; " * 8


@pytest.fixture
def utc(monkeypatch):
    """Dates are shown in local time: make it UTC, the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def rendered_lines(table: DataTable) -> list[str]:
    """The table's lines as drawn on the screen (header first)."""
    return [table.render_line(y).text for y in range(min(table.size.height, table.row_count + 1))]


async def small_help_then_large(pilot) -> None:
    await pilot.resize_terminal(50, 15)
    await pilot.pause()
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help screen")
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, HelpScreen), "the help screen to close")
    await pilot.resize_terminal(80, 24)
    await pilot.pause()


async def test_home_comes_back_after_help_opened_in_a_tiny_terminal(tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        await small_help_then_large(pilot)
        await wait_for(pilot, lambda: not home.has_class("too-small"), "the normal layout")
        assert home.query_one("#runs").display and home.query_one(".section").display
        assert not home.query_one(TooSmall).display


async def test_run_screen_comes_back_after_help_opened_in_a_tiny_terminal(tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_mid_training())
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunScreen(source))
        await wait_for(pilot, source.delivered.is_set, "the scripted events")
        screen = app.screen
        await small_help_then_large(pilot)
        assert app.screen is screen and screen.training
        await wait_for(pilot, lambda: not screen.has_class("too-small"), "the normal layout")
        assert all(screen.query_one(s).display for s in ("#charts", "#progress", "#legend", EpochTable))
        source.stop()


async def test_compare_in_a_tiny_terminal_asks_to_enlarge(tmp_path):
    app = CompareApp(write_runs(tmp_path / "runs", normal_pair()))
    async with app.run_test(size=(50, 15)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert screen.has_class("too-small")
        notice = screen.query_one(TooSmall)
        assert notice.display and "enlarge" in str(notice.render())
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: not screen.has_class("too-small"), "the normal layout")
        assert screen.query_one(TabbedContent).display and not notice.display


async def test_saved_runs_columns_are_as_wide_as_their_cells_at_80_columns(tmp_path, utc):
    runs = tmp_path / "runs"
    write_runs(runs, normal_pair())
    (runs / "03-broken.json").write_text('{"schema_version": 1')
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        table = home.query_one("#runs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3, "the saved runs")
        await pilot.pause()
        header, *rows = rendered_lines(table)
        assert header.split() == ["✓", "Date", "Preset", "Status", "Best", "acc", "Label"]
        readable = [r for r in rows if "completed" in r]
        assert len(readable) == 2 and all("2025-01-02 10:00" in r and "fixture" in r for r in readable)
        assert "98.60%" in "".join(readable) and "98.20%" in "".join(readable)


async def test_an_unreadable_run_says_so_in_its_row_and_why_below(tmp_path, utc):
    runs = tmp_path / "runs"
    write_runs(runs, normal_pair())
    broken = runs / "00-broken.json"
    broken.write_text('{"hello": 1}')
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        table = home.query_one("#runs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3, "the saved runs")
        await pilot.pause()
        lines = rendered_lines(table)[1:]
        unreadable = next(line for line in lines if "unreadable" in line)
        assert "00-broken.json" in unreadable and len(unreadable) <= 80
        # the readable runs' status and best accuracy stay on screen
        assert sum("completed" in line and "%" in line for line in lines) == 2
        table.focus()
        row = [str(table.get_row_at(i)[-1]) for i in range(3)].index("00-broken.json")
        table.move_cursor(row=row)
        await pilot.pause()
        details = str(home.query_one("#details", Static).render())
        assert str(broken) in details and "not a tuitrain run record" in details


async def test_compare_lists_each_unreadable_path_once(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"hello": 1}')
    app = CompareApp([*write_runs(tmp_path / "runs", normal_pair()), broken])
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("6")
        text = str(app.screen.query_one("#compare-unreadable", Static).render())
        assert text.count(str(broken)) == 1 and "not a tuitrain run record" in text


async def test_a_run_keeps_its_colour_on_the_run_screen_and_in_any_comparison(tmp_path):
    records = [
        make_record(f"lr={i}", [90.0 + i / 10], [(2.3, 0.3, 0.5)], invocation="20250102-100000-sweep-abcdef")
        for i in range(10)
    ]
    for i, r in enumerate(records):
        r.id, r.run_index, r.run_count = f"20250102-100000-sweep-abcdef-{i + 1:02d}", i, 10
    paths = write_runs(tmp_path / "runs", records)
    styles = [run_style(r.id, r.run_index) for r in records]
    assert len(set(styles)) == 10  # ten runs of a sweep never look the same
    assert len({s.colour for s in styles[:7]}) == len(PALETTE)  # the palette in order first
    assert styles[7].colour == styles[0].colour and styles[7].marker != styles[0].marker
    for order in (paths, list(reversed(paths)), paths[3:5]):
        app = CompareApp(order)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            by_label = {r.label: screen.run_styles[r.index] for r in screen.comparison.runs}
            assert by_label == {r.label: run_style(r.id, r.run_index) for r in records if r.label in by_label}
    # the run screen's epoch table colours a run's label with the same colour
    events = run_events(
        3,
        10,
        "lr=3",
        [90.3],
        epochs=1,
        batches_done=0,
        finished=True,
        scale=1.0,
        invocation="20250102-100000-sweep-abcdef",
    )
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunScreen(ScriptedSource(events, in_progress=False)))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the scripted run")
        label = app.screen.query_one(EpochTable).get_row_at(0)[0]
        assert str(label.style) == styles[3].markup


async def test_chart_legends_are_outside_the_plots(tmp_path):
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(two_runs_mid_training())
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunScreen(source))
        screen = app.screen
        await wait_for(
            pilot,
            lambda: source.delivered.is_set() and screen.query_one(EpochTable).row_count == 4,
            "the scripted events",
        )
        await wait_for(pilot, lambda: not (screen.loss_dirty or screen.accuracy_dirty), "the charts to draw")
        legend = str(screen.query_one("#legend", Static).render())
        assert "activation=relu" in legend and "activation=tanh" in legend
        for chart in ("#loss-chart", "#accuracy-chart"):
            drawn = str(screen.query_one(chart).render())
            assert "activation" not in drawn  # no legend box over the lines
        assert screen.query_one("#accuracy-chart").border_title == "Test accuracy %"
        source.stop()


def test_axis_ticks_are_round_numbers():
    # the accuracy axis of a 6-run comparison from 10.2% to 94.7%
    low, high = accuracy_range(10.2)
    assert round_ticks(low, high, ACCURACY_TICKS) == [0, 20, 40, 60, 80, 100]
    assert accuracy_range(80.5) == (80.0, 100.0) and round_ticks(80.0, 100.0, ACCURACY_TICKS) == [80, 85, 90, 95, 100]


async def test_compare_views_at_80x24_with_six_runs(tmp_path):
    app = CompareApp(write_runs(tmp_path / "runs", [*normal_pair(), chance_run(), *grid_runs()[:3]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        tabs = screen.query_one(TabbedContent)
        assert tabs.active == "tab-charts"
        for chart in ("#compare-loss", "#compare-acc"):
            plot = screen.query_one(chart)
            assert plot.border_title and plot.size.height >= 8
        await pilot.press("2")
        assert tabs.active == "tab-summary"
        await pilot.pause()
        hint = str(screen.query_one("#summary-hint", Static).render())
        assert "of 6 in full" in hint and "←/→" in hint
        await pilot.press("3")
        assert tabs.active == "tab-observations"
        assert "stuck at chance level" in str(screen.query_one("#compare-observations", Static).render())
        # b in the summary pins the run whose column is under the cursor (on the first run's at first)
        await pilot.press("2", "right", "b")
        await pilot.pause()
        assert screen.comparison.baseline == 2


async def test_compare_hints_at_80_columns_say_the_runs_wholly_in_view_and_the_run_b_pins(tmp_path):
    app = CompareApp(write_runs(tmp_path / "runs", [*normal_pair(), chance_run(), *grid_runs()[:1]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen

        def hint(name: str) -> str:
            widget = screen.query_one(f"#{name}-hint", Static)
            text = str(widget.render())
            assert len(text) <= widget.content_size.width  # whole, not cut by the edge
            return text

        keys = list(screen.query(FooterKey))  # every key whole at 80 columns, ? Help the last
        assert keys[-1].action == "help" and all(key.region.right <= 80 for key in keys)
        await pilot.press("4")
        await pilot.pause()
        # run 2's loss column is in view, its accuracy column is not: only run 1 is wholly in view
        assert hint("epochs") == "run 1 of 4 in full (←/→ for the others)"
        await pilot.press("2")
        await pilot.pause()
        table = screen.query_one("#compare-table", DataTable)
        assert table.has_focus and table.show_cursor and table.cursor_column == 1  # on the first run, not the names
        assert hint("summary") == "4 run(s) · b pins relu as baseline"
        await pilot.press("left")  # the names' column is not a run: the cursor stays on the runs
        await pilot.pause()
        assert table.cursor_column == 1
        await pilot.press("right", "b")
        await pilot.pause()
        assert screen.comparison.baseline == 2 and table.cursor_column == 2  # the table was redrawn
        assert hint("summary").endswith(" · b unpins tanh as baseline")  # (its ★ widened its column)


async def test_keys_are_the_same_everywhere_and_help_lists_the_compare_keys(tmp_path, utc):
    text = help_text()
    for key in ("| b |", "| a |", "| t |", "| Space |", "| 1 … 6 |"):
        assert key in text
    runs = tmp_path / "runs"
    paths = write_runs(runs, normal_pair())
    app = TuitrainApp(runs_dir=runs, presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        await wait_for(pilot, lambda: home.query_one("#runs", DataTable).row_count == 2, "the saved runs")
        # Enter on a saved run that is not live opens it in the comparison
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
        await app.workers.wait_for_complete()
        await pilot.pause()
        first_row = Path(str(home.query_one("#runs", DataTable).coordinate_to_cell_key((0, 0))[0].value))
        assert [r.file.path for r in app.screen.comparison.runs] == [first_row] and first_row in paths
        await pilot.press("q")  # quits from the compare screen too, as the help says
        await wait_for(pilot, lambda: app.return_code is not None, "the app to exit")
    app = CompareApp(paths)
    assert not app.ENABLE_COMMAND_PALETTE
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help in tuitrain compare")
        assert "Comparing runs" in help_text(app.screen.sections) and "Training" not in help_text(app.screen.sections)
        await pilot.press("escape", "q")
        await wait_for(pilot, lambda: app.return_code is not None, "q to quit")


async def test_finished_note_shows_the_end_of_the_files_path_at_80_columns_and_f_the_whole(tmp_path):
    folder = tmp_path / ("deeply/nested/runs/folder/" * 3) / "20250102-100000-demo-a1b2c3"
    events = run_events(0, 1, "activation=relu", [91.5], epochs=1, batches_done=0, finished=True, scale=1.0)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunScreen(ScriptedSource(events, in_progress=False, folder=folder)))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the end")
        await pilot.pause()
        panel = app.screen.query_one(ProgressPanel)
        last = str(panel.render()).splitlines()[-1]
        assert last.startswith("Finished (1 completed). Files: …/") and last.endswith("/20250102-100000-demo-a1b2c3")
        assert len(last) <= panel.content_size.width
        # the whole path: f shows it in a notification and copies it
        assert "f" in {b.key for _, b, enabled, _ in app.screen.active_bindings.values() if enabled and b.show}
        await pilot.press("f")
        await wait_for(pilot, lambda: app._notifications, "the notification")
        (shown,) = [n for n in app._notifications if n.title == "Run files"]
        assert shown.message.startswith(f"{folder}\n") and app.clipboard == str(folder)
        await pilot.resize_terminal(MIN_WIDTH, MIN_HEIGHT)
        await wait_for(pilot, lambda: panel.content_size.width == MIN_WIDTH - 2, "the narrow layout")
        await pilot.pause()
        lines = str(panel.render()).splitlines()
        assert all(len(line) <= panel.content_size.width for line in lines)  # not wrapped
        assert lines[-1].startswith("Files: …/") and lines[-1].endswith("/20250102-100000-demo-a1b2c3")


def test_the_app_prints_the_folders_it_trained_into_on_exit(monkeypatch, capsys, tmp_path):
    """The run screen cuts a long path to its width: on exit the whole one is left in the terminal."""
    import tuitrain.tui.app
    from tuitrain.cli import main

    trained, unused = tmp_path / "runs/20250102-100000-demo-a1b2c3", tmp_path / "runs/20250102-100100-demo-d4e5f6"
    trained.mkdir(parents=True)
    unused.mkdir()
    (trained / "01-lr=0.1.json").write_text("{}")

    class App:
        signal_exit_code = return_code = None
        run_folders = [trained, unused]  # the second stopped before any run file was written

        def __init__(self, **kw):
            pass

        def run(self):
            pass

    monkeypatch.setattr(tuitrain.tui.app, "TuitrainApp", App)
    assert main([]) == 0
    assert capsys.readouterr().out == f"Run files: {trained}\n"


async def test_an_invalid_preset_shows_its_reason_first(tmp_path, tiny_preset):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "broken"\ntitle = "x"\n[defaults]\nmodel = "model_a"\nwarp = 9\n')
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={"tiny": tiny_preset, "broken": broken})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        title = str(app.screen.query_one("#presets", DataTable).get_row("broken")[-1])
        assert title.startswith("invalid: unknown setting 'warp'")  # the reason first, cut to the room left
        assert (
            preset_problem(f"{broken}:5: unknown setting 'warp'.", broken) == "unknown setting 'warp'. (broken.toml:5)"
        )
        await pilot.press("down")
        details = str(app.screen.query_one("#details", Static).render())
        assert str(broken) in details


async def test_estimates_are_renewed_when_a_run_completed_meanwhile(tmp_path, tiny_preset, monkeypatch):
    import tuitrain.session

    seconds = {"now": 60.0}
    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (2 threads)")
    monkeypatch.setattr(tuitrain.session, "estimated_seconds", lambda specs, **kw: seconds["now"])
    runs = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs, presets={"tiny": tiny_preset})
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        table = home.query_one("#presets", DataTable)
        await wait_for(pilot, lambda: str(table.get_cell("tiny", "time")) == "1m00s", "the first estimate")
        # a run completes elsewhere (its measured speed updates the estimates' cache); back on home
        seconds["now"] = 120.0
        write_runs(runs, normal_pair()[:1])
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: str(table.get_cell("tiny", "time")) == "2m00s", "the renewed estimate")


@pytest.mark.parametrize("at_once", [False, True], ids=["one-run", "two-at-once"])
async def test_the_run_screen_fits_the_smallest_terminal(tmp_path, at_once):
    """At the documented minimum, 60x18: every part in view (the screen does not scroll), the progress lines unwrapped,
    every footer key whole, and the charts tall enough to show the loss curve and each epoch's accuracy point."""
    source = ScriptedSource(two_runs_at_once() if at_once else two_runs_mid_training(), parallel=at_once)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(MIN_WIDTH, MIN_HEIGHT)) as pilot:
        app.push_screen(RunScreen(source))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and source.delivered.is_set(), "the events")
        screen = app.screen
        rows = 1 if at_once else 4
        await wait_for(pilot, lambda: screen.query_one(EpochTable).row_count == rows, "the epoch rows")
        await wait_for(pilot, lambda: not (screen.loss_dirty or screen.accuracy_dirty or screen.progress_dirty), "draw")
        await pilot.pause()
        assert screen.max_scroll_y == 0 and screen.scroll_y == 0
        parts = [screen.query_one(s) for s in ("#progress", "#legend", "#loss-chart", "#accuracy-chart", EpochTable)]
        for part in [*parts, screen.query_one(Footer)]:
            assert part.display and screen.region.contains_region(part.region), part
        panel = screen.query_one(ProgressPanel)
        lines = str(panel.render()).splitlines()
        assert all(len(line) <= panel.content_size.width for line in lines)  # cut, so not wrapped
        keys = list(screen.query(FooterKey))
        assert keys and all(key.region.right <= MIN_WIDTH for key in keys)
        assert {key.action for key in keys} >= {"pause", "stop_run", "stop_all"}
        loss, accuracy = screen.query_one(LossChart), screen.query_one(AccuracyChart)
        assert loss.content_size.height >= 7 and accuracy.content_size.height >= 7
        # a dot per epoch with an accuracy: every one drawn inside the chart
        dots = sum(line.count("•") for line in accuracy.render().plain.splitlines())
        assert dots == (1 if at_once else 4)
        assert screen.query_one(EpochTable).size.height >= 3
        source.stop()
