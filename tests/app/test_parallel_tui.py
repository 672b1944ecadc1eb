"""The run screen with several runs training at once: a line per run, one highlighted, keys acting on it alone.

Fed by a scripted event source (tests/app/scripted.py) whose runs each have their own RunControl, as worker
processes give them: no training, no clocks.
"""

from __future__ import annotations

from textual.widgets import DataTable, Static

from tests.app.scripted import INVOCATION, ScriptedSource, interleaved, run_events, two_runs_at_once, waiting
from tests.helpers import error_dialog_shown, wait_for
from tuitrain.core.events import RunFinished
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.progress import ProgressPanel

RELU, TANH = f"{INVOCATION}-01", f"{INVOCATION}-02"


def panel_lines(screen: RunScreen) -> list[str]:
    return str(screen.query_one(ProgressPanel).render()).splitlines()


def footer_keys(screen: RunScreen) -> set[str]:
    return {binding.key for _, binding, enabled, _ in screen.active_bindings.values() if enabled and binding.show}


async def start(pilot, source: ScriptedSource) -> RunScreen:
    pilot.app.push_screen(RunScreen(source))
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen) and source.delivered.is_set(), "the events")
    screen = pilot.app.screen
    await wait_for(pilot, lambda: len(screen.monitor.live) == 2, "both runs on the screen")
    await wait_for(pilot, lambda: not screen.progress_dirty, "the progress lines")  # redrawn by a timer
    return screen


async def test_both_runs_show_and_the_keys_act_on_the_highlighted_run_alone(tmp_path):
    source = ScriptedSource(two_runs_at_once(3), parallel=True)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await start(pilot, source)
        lines = panel_lines(screen)
        assert [line.split()[:3] for line in lines[:3]] == [
            ["▸", "1/3", "activation=relu"],  # the first run started is highlighted
            ["2/3", "activation=tanh", "Epoch"],
            ["3/3", "activation=sigmoid", "waiting"],
        ]
        assert "Epoch 2/3" in lines[0] and "15/20" in lines[0] and "CPU (2 threads)" in lines[0]
        assert "Epoch 1/3" in lines[1] and "10/20" in lines[1]
        assert "waiting for a free core" in lines[2]
        assert {"tab", "p", "n", "x"} <= footer_keys(screen)
        relu, tanh = source.run_controls[RELU], source.run_controls[TANH]

        await pilot.press("p")  # pauses run 1 only
        assert relu.paused.is_set() and not tanh.paused.is_set()
        lines = panel_lines(screen)
        assert "PAUSED" in lines[0] and "PAUSED" not in lines[1]

        await pilot.press("tab")
        assert screen.monitor.current.run_id == TANH
        assert panel_lines(screen)[1].startswith("▸ 2/3")
        await pilot.press("n")  # stops run 2 only
        assert tanh.stop_run.is_set() and not relu.stop_run.is_set() and not source.control.stop_all.is_set()
        await pilot.press("p")
        assert tanh.paused.is_set() and relu.paused.is_set()
        await pilot.press("tab")  # round the live runs: back to run 1
        assert screen.monitor.current.run_id == RELU
        await pilot.press("shift+tab")
        assert screen.monitor.current.run_id == TANH

        await pilot.press("x")  # stops all: the source's control, which the scheduler passes on
        assert source.control.stop_all.is_set()
        await wait_for(pilot, lambda: screen.done, "the source to end")


async def test_when_the_highlighted_run_ends_the_highlight_moves_to_a_live_run(tmp_path):
    source = ScriptedSource(two_runs_at_once(3), parallel=True)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await start(pilot, source)
        assert screen.monitor.current.run_id == RELU
        source.send(
            [RunFinished(run_id=RELU, label="activation=relu", run_index=0, status="completed", best_accuracy=91.5)]
        )
        await wait_for(pilot, lambda: screen.monitor.current.run_id == TANH, "the highlight to move")
        await pilot.pause()
        lines = panel_lines(screen)
        # the ended run drops off the progress lines; the epoch table and the legend keep it
        assert not any("activation=relu" in line for line in lines)
        assert lines[0].startswith("▸ 2/3 activation=tanh") and "waiting for a free core" in lines[1]
        assert str(screen.query_one(EpochTable).get_row_at(0)[0]) == "activation=relu"
        # one run left: no run to move the highlight to
        assert "tab" not in footer_keys(screen)
        # the waiting run starts in the freed slot and the highlight stays where it is
        third = run_events(2, 3, "activation=sigmoid", [], epochs=3, batches_done=5, finished=False, scale=0.8)
        source.send(third)
        await wait_for(pilot, lambda: len(screen.monitor.live) == 2, "run 3 to start")
        await wait_for(pilot, lambda: not screen.progress_dirty, "the progress lines")
        assert screen.monitor.current.run_id == TANH and not screen.monitor.waiting
        assert [line.split()[0] for line in panel_lines(screen)[:2]] == ["▸", "3/3"]
        source.stop()


async def test_at_80x24_the_lines_collapse_around_the_highlighted_run(tmp_path):
    runs = [
        run_events(i, 7, f"lr=0.{i + 1}", [], epochs=2, batches_done=5 + i, finished=False, scale=1.0) for i in range(5)
    ]
    events = [waiting(5, 7, "lr=0.6"), waiting(6, 7, "lr=0.7"), *interleaved(*runs)]
    source = ScriptedSource(events, parallel=True)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        pilot.app.push_screen(RunScreen(source))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and source.delivered.is_set(), "the events")
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.monitor.live) == 5, "five runs")
        await wait_for(pilot, lambda: not screen.progress_dirty, "the progress lines")
        for _ in range(4):  # highlight the last run
            await pilot.press("tab")
        await pilot.pause()
        lines = panel_lines(screen)
        assert len(lines) == 4 and all(len(line) <= 78 for line in lines)
        assert [line.split()[:2] for line in lines[:3]] == [["1/7", "lr=0.1"], ["2/7", "lr=0.2"], ["▸", "5/7"]]
        assert lines[3].strip() == "+2 more running, 2 waiting"
        # the charts and the epoch table keep their room
        assert screen.query_one("#charts").size.height >= 8 and screen.query_one(EpochTable).size.height >= 4
        source.stop()


async def test_one_run_at_a_time_keeps_the_three_lines_of_the_run(tmp_path):
    events = run_events(0, 2, "activation=relu", [91.5], epochs=3, batches_done=5, finished=False, scale=1.0)
    source = ScriptedSource(events)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        pilot.app.push_screen(RunScreen(source))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and source.delivered.is_set(), "the events")
        screen = app.screen
        # delivered is set once the events are posted: wait for the screen to have taken them
        await wait_for(pilot, lambda: screen.monitor.current is not None, "the run on the screen")
        await wait_for(pilot, lambda: not screen.progress_dirty, "the progress lines")
        lines = panel_lines(screen)
        assert lines[0].startswith("Run 1/2 activation=relu") and lines[1].startswith("Epoch 2/3")
        assert lines[2].startswith("Elapsed")
        assert "tab" not in footer_keys(screen)
        await pilot.press("p")  # with one run at a time its control is the source's
        assert source.control.paused.is_set() and "PAUSED" in panel_lines(screen)[0]
        await pilot.press("p", "n")
        assert not source.control.paused.is_set() and source.control.stop_run.is_set()
        source.stop()


async def test_j_on_home_picks_the_runs_at_once_and_the_estimates_follow(tmp_path, tiny_preset, monkeypatch):
    import tuitrain.core.cores
    import tuitrain.session
    from tuitrain.core.errors import TuitrainError

    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (3 threads)")
    # 100 s one at a time, shared out over the runs at once
    monkeypatch.setattr(tuitrain.session, "estimated_seconds", lambda specs, jobs=1, **kw: 100.0 / jobs)
    monkeypatch.setattr(tuitrain.session, "machine_cores", lambda: 3)
    monkeypatch.setattr(tuitrain.core.cores, "machine_cores", lambda: 3)
    prepared = []

    def prepare(preset, **kw):
        prepared.append(kw)
        raise TuitrainError("not training in this test")

    monkeypatch.setattr(tuitrain.session.PresetInvocation, "prepare", prepare)
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={"tiny": tiny_preset}, gpus=[0])
    monkeypatch.setattr(tuitrain.session, "check_gpus", lambda gpus: [])  # no GPU here: as if none were asked for
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        table = home.query_one("#presets", DataTable)
        title = home.query_one("#presets-title", Static)

        async def shown(jobs: str, time: str) -> str:
            await wait_for(
                pilot,
                lambda: [str(table.get_cell("tiny", k)) for k in ("jobs", "time")] == [jobs, time],
                f"{jobs} at once in {time}",
            )
            return str(title.render())

        # auto: the preset's two runs at once on three cores
        assert (await shown("2", "50s")).endswith("Jobs: auto (2), j changes")
        await pilot.press("j")
        assert (await shown("1", "1m40s")).endswith("Jobs: 1, j changes")
        await pilot.press("j")
        assert (await shown("2", "50s")).endswith("Jobs: 2, j changes")
        await pilot.press("j")  # up to the cores; the preset has two runs to train
        assert (await shown("2", "50s")).endswith("Jobs: 3 (2), j changes")
        await pilot.press("j", "j")  # auto, then 1
        assert (await shown("1", "1m40s")).endswith("Jobs: 1, j changes")
        await pilot.press("enter")
        await wait_for(pilot, lambda: error_dialog_shown(app), "the start to be refused")
        assert prepared[-1]["jobs"] == 1 and prepared[-1]["gpus"] == [0]


def test_the_command_line_gives_the_app_its_jobs_and_gpus(monkeypatch, capsys):
    import tuitrain.tui.app
    from tuitrain.cli import main

    given = {}

    class App:
        signal_exit_code = return_code = None
        run_folders: list = []

        def __init__(self, **kw):
            given.update(kw)

        def run(self):
            pass

    monkeypatch.setattr(tuitrain.tui.app, "TuitrainApp", App)
    assert main(["--jobs", "2"]) == 0
    assert given["jobs"] == 2 and given["gpus"] is None
    assert main(["--jobs", "auto"]) == 0 and given["jobs"] == "auto"
    assert main([]) == 0 and given["jobs"] is None  # each preset's own `jobs`
    # GPUs are checked before the app opens: one line, exit 2, as with --no-ui
    assert main(["--gpus", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuitrain: error: --gpus: ") and len(err.splitlines()) == 1


async def test_the_epoch_table_groups_rows_by_run_in_run_order(tmp_path):
    """Runs trained at once finish their epochs interleaved; the table lists each run's epochs together."""
    runs = [
        run_events(i, 3, label, accuracies, epochs=2, batches_done=0, finished=True, scale=1.0)
        for i, (label, accuracies) in enumerate([("lr=0.1", [90.0, 92.0]), ("lr=0.01", [91.0, 93.0])])
    ]
    late = run_events(2, 3, "lr=0.001", [88.0], epochs=2, batches_done=3, finished=False, scale=1.0)
    source = ScriptedSource([*interleaved(runs[1], runs[0])], parallel=True)  # run 2's epochs come first
    app = TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    async with app.run_test(size=(80, 24)) as pilot:
        pilot.app.push_screen(RunScreen(source))
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and source.delivered.is_set(), "the events")
        table = app.screen.query_one(EpochTable)
        await wait_for(pilot, lambda: table.row_count == 4, "the epoch rows")
        source.send(late)
        await wait_for(pilot, lambda: table.row_count == 5, "run 3's epoch")
        rows = [(str(table.get_row_at(i)[0]), str(table.get_row_at(i)[1])) for i in range(table.row_count)]
        assert rows == [("lr=0.1", "1"), ("lr=0.1", "2"), ("lr=0.01", "1"), ("lr=0.01", "2"), ("lr=0.001", "1")]
        source.stop()
