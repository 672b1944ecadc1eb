"""A small app that opens straight on the compare screen (`tuitrain compare` without --no-ui)."""

from __future__ import annotations

from typing import Any

from textual.app import App

from tuitrain.tui.screens.compare import CompareScreen, Source


class CompareApp(App):
    """Just the compare screen; its Back key closes the app."""

    TITLE = "tuitrain compare"

    def __init__(self, source: Source, **options: Any) -> None:
        super().__init__()
        self.source = source
        self.options = options

    def on_mount(self) -> None:
        self.push_screen(CompareScreen(self.source, **self.options), callback=lambda _: self.exit())
