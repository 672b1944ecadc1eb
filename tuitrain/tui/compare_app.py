"""A small app that opens straight on the compare screen (`tuitrain compare` without --no-ui)."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.binding import Binding

from tuitrain.tui.screens.compare import CompareScreen, Source
from tuitrain.tui.screens.help import HelpScreen


class CompareApp(App):
    """Just the compare screen; its Back key closes the app, and q quits as in `tuitrain`."""

    CSS_PATH = "app.tcss"
    TITLE = "tuitrain compare"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, source: Source, **options: Any) -> None:
        super().__init__()
        self.source = source
        self.options = options

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.source, **self.options), callback=lambda _: self.exit())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(sections=("compare", "everywhere")))
