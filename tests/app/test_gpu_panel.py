"""The run screen's GPU panel: hidden on a CPU run (nothing read), shown with one line per GPU on a GPU run,
refreshed from the sampler (a fake one here: the NVML side is tested on a GPU in tests/engine/test_cuda.py)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.app.scripted import ScriptedSource, two_runs_mid_training
from tests.helpers import wait_for
from tuitrain.core.events import RunStarted
from tuitrain.gpu import GpuReading
from tuitrain.tui import app as app_module
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets import gpu_panel
from tuitrain.tui.widgets.epoch_table import EpochTable
from tuitrain.tui.widgets.gpu_panel import GpuPanel

GIB = 1024**3


class FakeSampler:
    made = 0

    def __init__(self, *args, **kwargs) -> None:
        FakeSampler.made += 1
        self.reads = 0

    def read(self) -> list[GpuReading]:
        self.reads += 1
        return [GpuReading(0, "NVIDIA H100 80GB HBM3", 97, 5 * GIB, 80 * GIB, int(1.25 * GIB))]


@pytest.fixture
def fake_sampler(monkeypatch: pytest.MonkeyPatch) -> type[FakeSampler]:
    FakeSampler.made = 0
    monkeypatch.setattr(gpu_panel, "GpuSampler", FakeSampler)
    return FakeSampler


def on_device(device: str):
    return [dataclasses.replace(e, device=device) if isinstance(e, RunStarted) else e for e in two_runs_mid_training()]


@pytest.mark.parametrize("device", ["CPU (2 threads)", "NVIDIA H100 80GB HBM3"])
async def test_gpu_panel_only_for_a_run_on_a_gpu(tmp_path, fake_sampler, device: str) -> None:
    app = app_module.TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(on_device(device))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(RunScreen(source))
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            screen = app.screen
            await wait_for(
                pilot,
                lambda: source.delivered.is_set() and screen.query_one(EpochTable).row_count == 4,
                "the scripted events",
            )
            await pilot.pause()
            panel = screen.query_one(GpuPanel)
            if device.startswith("CPU"):
                assert not panel.display
                assert fake_sampler.made == 0  # nothing read on a CPU run
            else:
                assert panel.display
                assert fake_sampler.made == 1  # one sampler however many runs start
                text = str(panel.render())
                assert text == "GPU0 NVIDIA H100 80GB HBM3 · util 97% · mem 5.0/80.0 GiB · peak 1.25 GiB"
    finally:
        source.stop()


async def test_gpu_panel_hides_when_there_is_nothing_to_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NothingToRead(FakeSampler):
        def read(self) -> list[GpuReading]:
            return []

    monkeypatch.setattr(gpu_panel, "GpuSampler", NothingToRead)
    app = app_module.TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(on_device("Some GPU"))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(RunScreen(source))
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            await wait_for(pilot, source.delivered.is_set, "the scripted events")
            await pilot.pause()
            assert not app.screen.query_one(GpuPanel).display
    finally:
        source.stop()
