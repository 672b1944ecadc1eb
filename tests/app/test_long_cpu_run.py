"""Before a preset estimated at hours on a CPU, the home screen offers its quick variant instead of silently
starting hours of work (Pilot; the device and the estimate are fixed, no calibration)."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tuitrain.records import read_record
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.dialogs import LongRunScreen
from tuitrain.tui.screens.home import HomeScreen
from tuitrain.tui.screens.run import RunScreen


@pytest.fixture
def hours_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import tuitrain.session

    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (2 threads)")
    monkeypatch.setattr(tuitrain.session, "estimated_seconds", lambda specs, **kw: 2 * 3600.0)


async def open_long_run_dialog(app: TuitrainApp, pilot) -> LongRunScreen:
    home = app.screen
    assert isinstance(home, HomeScreen)
    await wait_for(pilot, lambda: "tiny" in home.seconds and home.device, "the estimate")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, LongRunScreen), "the question")
    return app.screen


async def test_a_long_cpu_preset_offers_the_quick_variant(hours_on_a_cpu, tiny_preset, mnist_dir, tmp_path) -> None:
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await open_long_run_dialog(app, pilot)
        question = str(dialog.query_one("#long-run-question").render())
        assert "estimated at 2h00m on this CPU (CPU (2 threads))" in question, question
        assert "--subset 5000 --epochs 2" in question
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.done, "training to finish")
    records = [read_record(p) for p in sorted(runs_dir.glob("*/*.json"))]
    assert records and all(r.spec.subset == 5000 and r.spec.epochs == 2 for r in records)
    assert all(r.status == "completed" for r in records)


async def test_cancelling_the_long_cpu_preset_starts_nothing(hours_on_a_cpu, tiny_preset, mnist_dir, tmp_path) -> None:
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        await open_long_run_dialog(app, pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
        await pilot.pause()
    assert not list(runs_dir.glob("*/*.json"))


async def test_the_full_preset_can_still_be_chosen(hours_on_a_cpu, tiny_preset, mnist_dir, tmp_path) -> None:
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        await open_long_run_dialog(app, pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.done, "training to finish")
    records = [read_record(p) for p in sorted(runs_dir.glob("*/*.json"))]
    assert records and all(r.spec.subset is None for r in records)


async def test_a_long_cpu_preset_from_the_command_line_is_asked_about_too(
    hours_on_a_cpu, tiny_preset, mnist_dir, tmp_path
) -> None:
    """`tuitrain --preset NAME` asks the same question before hours on a CPU (it started at once before)."""
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(preset="tiny", runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, (LongRunScreen, RunScreen)), "the question")
        assert isinstance(app.screen, LongRunScreen)
        assert "tiny is estimated at 2h00m" in str(app.screen.query_one("#long-run-question").render())
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
        await pilot.pause()
    assert not list(runs_dir.glob("*/*.json"))


async def test_a_short_preset_from_the_command_line_starts_at_once(
    tiny_preset, mnist_dir, tmp_path, monkeypatch
) -> None:
    import tuitrain.session

    # a minute on a CPU (measured on a loaded machine, the tiny preset's 60,000 images a run could pass an hour)
    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (2 threads)")
    monkeypatch.setattr(tuitrain.session, "estimated_seconds", lambda specs, **kw: 60.0)
    app = TuitrainApp(preset=str(tiny_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir, presets={})
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.done, "training to finish")
    assert [read_record(p).status for p in sorted((tmp_path / "runs").glob("*/*.json"))] == ["completed"] * 2


@pytest.fixture
def not_timed_and_slow(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A CPU whose cores other work keeps busy: no model is timed alone (no cached figure, no calibration kept), and
    measured beside that work the models train at a sample a second. Returns the models measured so."""
    import tuitrain.session
    from tuitrain.train import estimate

    measured: list[str] = []

    def measure_beside_other_work(spec, device) -> dict:
        measured.append(spec.model)
        return {"train_samples_per_s": 1.0, "eval_samples_per_s": 100.0}

    monkeypatch.setattr(tuitrain.session, "device_label", lambda device: "CPU (1 thread)")
    monkeypatch.setattr(estimate, "calibrated", lambda spec, device, threads: None)
    monkeypatch.setattr(estimate, "measure", measure_beside_other_work)
    return measured


async def test_a_preset_not_timed_on_a_busy_cpu_is_still_asked_about(
    not_timed_and_slow, tiny_preset, mnist_dir, tmp_path
) -> None:
    """Where other work keeps the cores busy no estimate is listed; hours of training still are not started at once,
    from the command line or by Enter."""
    runs_dir = tmp_path / "runs"
    app = TuitrainApp(preset="tiny", runs_dir=runs_dir, data_dir=mnist_dir, presets={"tiny": tiny_preset})
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, (LongRunScreen, RunScreen)), "the question")
        assert isinstance(app.screen, LongRunScreen)
        assert "tiny is estimated at" in str(app.screen.query_one("#long-run-question").render())
        assert not_timed_and_slow  # measured for the start, beside the other work
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
        home = app.screen
        # the list says '?' for it: a figure measured beside other work is neither listed nor kept
        await wait_for(pilot, lambda: home.device and str(home.preset_rows["tiny"][3]) == "?", "the list's '?'")
        assert "tiny" not in home.seconds
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, (LongRunScreen, RunScreen)), "the question again")
        assert isinstance(app.screen, LongRunScreen)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), "back on the home screen")
        await pilot.pause()
    assert not list(runs_dir.glob("*/*.json"))
