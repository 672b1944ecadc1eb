"""The run screen's GPU panel: hidden on a CPU run (nothing read), shown with one line per GPU on a GPU run,
refreshed from the sampler (a fake one here: the NVML side is tested on a GPU in tests/engine/test_cuda.py)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from tests.app.scripted import ScriptedSource, two_runs_at_once, two_runs_mid_training
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

    def __init__(self, indices: list[int], *args, **kwargs) -> None:
        FakeSampler.made += 1
        self.indices = list(indices)
        self.reads = 0

    def follow(self, indices: list[int]) -> None:
        self.indices = list(indices)

    def read(self) -> list[GpuReading]:
        self.reads += 1
        peak = int(1.25 * GIB)
        return [GpuReading(i, "NVIDIA H100 80GB HBM3", 97 - i, 5 * GIB, 80 * GIB, peak) for i in self.indices]


@pytest.fixture
def fake_sampler(monkeypatch: pytest.MonkeyPatch) -> type[FakeSampler]:
    FakeSampler.made = 0
    monkeypatch.setattr(gpu_panel, "GpuSampler", FakeSampler)
    return FakeSampler


def on_device(device: str):
    return [dataclasses.replace(e, device=device) if isinstance(e, RunStarted) else e for e in two_runs_mid_training()]


def on_gpus(host: str | None = None):
    """Two runs training at once, run 1 on GPU 0 and run 2 on GPU 1 (of `host`: None, this machine)."""
    return [
        dataclasses.replace(e, device="NVIDIA H100 80GB HBM3", gpu=e.run_index, host=host or socket.gethostname())
        if isinstance(e, RunStarted)
        else e
        for e in two_runs_at_once()
    ]


async def shown_panel(tmp_path, events) -> tuple[bool, list[str]]:
    """Whether the GPU panel shows once the run screen has taken `events`, and its lines."""
    app = app_module.TuitrainApp(runs_dir=tmp_path / "runs", presets={})
    source = ScriptedSource(events)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            app.push_screen(RunScreen(source))
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            screen = app.screen
            started = sum(isinstance(e, RunStarted) for e in events)
            await wait_for(
                pilot, lambda: source.delivered.is_set() and len(screen.monitor.runs) == started, "the scripted events"
            )
            await pilot.pause()
            panel = screen.query_one(GpuPanel)
            return panel.display, str(panel.render()).splitlines()
    finally:
        source.stop()


async def test_gpu_panel_has_a_line_per_gpu_of_the_runs_training_at_once(tmp_path, fake_sampler) -> None:
    shown, lines = await shown_panel(tmp_path, on_gpus())
    assert shown and fake_sampler.made == 1
    assert lines == [
        "GPU0 NVIDIA H100 80GB HBM3 · util 97% · mem 5.0/80.0 GiB · peak 1.25 GiB",
        "GPU1 NVIDIA H100 80GB HBM3 · util 96% · mem 5.0/80.0 GiB · peak 1.25 GiB",
    ]


async def test_gpu_panel_reads_nothing_for_runs_on_other_machines(tmp_path, fake_sampler) -> None:
    shown, _lines = await shown_panel(tmp_path, on_gpus(host="another-node"))
    assert not shown and fake_sampler.made == 0  # this machine's GPUs are not theirs


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
