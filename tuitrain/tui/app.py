"""TuitrainApp: the home screen, then a run screen per preset trained. `tuitrain` with no --no-ui."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from textual import on
from textual.app import App
from textual.binding import Binding

from tuitrain.core.errors import TuitrainError
from tuitrain.follow import Follower
from tuitrain.presets import Traversable, available_presets, find_preset, load_preset_file
from tuitrain.signals import STOP_SIGNALS, StopOnSignals, exit_code_for
from tuitrain.tui.messages import StartPreset, WatchRuns
from tuitrain.tui.screens.dialogs import ErrorScreen
from tuitrain.tui.screens.help import HelpScreen
from tuitrain.tui.screens.home import HomeScreen
from tuitrain.tui.screens.run import RunScreen

if TYPE_CHECKING:
    from tuitrain.executors.ray import RayOptions
    from tuitrain.session import PresetInvocation

HANGUP_EXIT_AFTER_S = 5.0
"""After a hang-up, how long Textual's teardown may take before the process ends without it."""


class TuitrainApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "tuitrain"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(
        self,
        preset: str | None = None,
        runs_dir: Path = Path("runs"),
        data_dir: Path | None = None,
        overrides: dict[str, Any] | None = None,
        presets: dict[str, Path] | None = None,
        watch: Path | None = None,
        jobs: int | Literal["auto"] | None = None,
        gpus: list[int] | None = None,
        ray: RayOptions | None = None,
    ) -> None:
        """`presets` (name -> file) replaces the presets folders' list (tests use a tiny one); `watch` opens the
        run screen on a run file or folder that another process is training (`tuitrain watch`); `jobs`: runs
        trained at once (--jobs; None: each preset's `jobs`), which the home screen can change; `gpus`: the GPUs
        to train on (--gpus; None: every visible one)."""
        super().__init__()
        self.preset = preset
        self.runs_dir = Path(runs_dir)
        self.data_dir = data_dir
        self.overrides = dict(overrides or {})
        self.preset_paths: dict[str, Path | Traversable] = dict(presets) if presets is not None else available_presets()
        self.watched = watch  # not `watch`: that would hide Textual's DOMNode.watch method
        self.jobs = jobs
        self.gpus = gpus
        self.ray = ray
        """Train presets on Ray with these options (--executor ray); None: on this machine."""
        self.invocations: list[PresetInvocation] = []
        """The presets started here."""
        self.stop_signals: StopOnSignals | None = None
        self.signal_exit_code: int | None = None

    def on_mount(self) -> None:
        self.install_signal_handlers()
        # watching needs no estimates (nor torch): the home screen estimates once it is shown; a preset given
        # on the command line starts from the home screen (after its estimate: hours on a CPU are asked about)
        estimate_now = self.preset is None and self.watched is None
        self.push_screen(
            HomeScreen(
                self.preset_paths,
                self.runs_dir,
                self.overrides,
                estimate_now=estimate_now,
                jobs=self.jobs,
                gpus=self.gpus,
                start=self.preset or None,
            )
        )
        if not self.preset and self.watched is not None:
            self.watch_runs(self.watched)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGHUP (a dropped SSH session) stop training like a confirmed quit: the run is saved
        as interrupted, then the app exits with 128 + the signal number. (Ctrl-C is a key in the app.)"""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. some test runners)
        loop = asyncio.get_running_loop()
        self.stop_signals = StopOnSignals(
            None,
            [s for s in STOP_SIGNALS if s != signal.SIGINT],
            exit_on_second=False,
            on_signal=lambda signum, first: loop.call_soon_threadsafe(self.stop_for_signal, signum),
        ).install()

    def stop_for_signal(self, signum: int) -> None:
        self.signal_exit_code = exit_code_for(signum)
        screen = self.training_screen()
        if screen is None:
            self.exit(return_code=self.signal_exit_code)
        elif not screen.quitting:
            screen.stop_and_quit(signal.Signals(signum).name)

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Leave the app. After a hang-up the terminal is gone, and Textual's teardown can block for ever writing
        to it (its writer thread died on the closed tty): the run files are saved by now, so the process ends
        itself if the teardown has not within a few seconds. (Not in a headless app, e.g. under Pilot: there the
        process is the test runner's.)"""
        if self.signal_exit_code == exit_code_for(signal.SIGHUP) and not self.is_headless:
            watchdog = threading.Timer(HANGUP_EXIT_AFTER_S, os._exit, [self.signal_exit_code])
            watchdog.daemon = True
            watchdog.start()
        super().exit(*args, **kwargs)

    def on_unmount(self) -> None:
        if self.stop_signals is not None:
            self.stop_signals.restore()

    @on(StartPreset)
    def start_requested(self, message: StartPreset) -> None:
        self.start_preset(message.preset, message.path, message.overrides, jobs=message.jobs)

    def start_preset(
        self,
        name: str,
        path: Path | Traversable | None = None,
        overrides: dict | None = None,
        *,
        jobs: int | Literal["auto"] | None = None,
    ) -> None:
        """Check everything cheap on the UI side (preset, overrides, device, GPUs, runs folder), then train `jobs`
        runs at once (None: as the preset says)."""
        from tuitrain.session import (  # torch: not for watching or comparing
            PresetInvocation,
            PresetSource,
        )

        try:
            preset = load_preset_file(path) if path is not None else find_preset(name)
            invocation = PresetInvocation.prepare(
                preset,
                runs_dir=self.runs_dir,
                overrides={**self.overrides, **(overrides or {})},
                data_dir=self.data_dir,
                jobs=jobs,
                gpus=self.gpus,
                ray=self.ray,
            )
        except TuitrainError as exc:
            self.push_screen(ErrorScreen(str(exc), title="Cannot start the preset"))
            return
        self.invocations.append(invocation)
        self.push_screen(RunScreen(PresetSource(invocation)))

    @on(WatchRuns)
    def watch_requested(self, message: WatchRuns) -> None:
        self.watch_runs(message.path)

    def watch_runs(self, path: Path) -> None:
        """The run screen, fed by the run files another process writes."""
        try:
            source = Follower(path)
        except TuitrainError as exc:
            self.push_screen(ErrorScreen(str(exc), title="Cannot watch"))
            return
        self.push_screen(RunScreen(source))

    @property
    def run_folders(self) -> list[Path]:
        """The folders of the presets trained here, for the command line to print on exit (the run screen cuts a
        long path to its width); a preset that stopped before its folder was made has none."""
        return [invocation.folder for invocation in self.invocations if invocation.folder is not None]

    def training_screen(self) -> RunScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, RunScreen) and screen.training:
                return screen
        return None

    async def action_quit(self) -> None:
        screen = self.training_screen()
        if screen is None:
            self.exit()
        elif not screen.quitting:
            screen.request_quit()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
