"""Shown instead of a screen's content when the terminal is too small to draw it legibly."""

from __future__ import annotations

from textual import events
from textual.geometry import Size
from textual.screen import Screen, ScreenResultType
from textual.widgets import Static

MIN_WIDTH = 60
MIN_HEIGHT = 18


def too_small(size: Size) -> bool:
    width, height = size
    return width < MIN_WIDTH or height < MIN_HEIGHT


class TooSmall(Static):
    """Hidden unless its screen has the `too-small` class (see SizedScreen)."""

    def __init__(self) -> None:
        super().__init__(
            f"Please enlarge the terminal\n(at least {MIN_WIDTH}x{MIN_HEIGHT}; 80x24 or more is best).\n\nq quits.",
        )


class SizedScreen(Screen[ScreenResultType]):
    """A screen that swaps its content for TooSmall in a tiny terminal.

    The `too-small` class is the screen's own and derived from the terminal size each time the screen
    is resized or comes back to the top: a screen below another one gets no resize, so a class set once
    by the app went stale when a screen was pushed and popped while the terminal was small.
    """

    def on_resize(self, event: events.Resize) -> None:
        self.fit_terminal(event.size)

    def on_screen_resume(self) -> None:
        self.fit_terminal(self.app.size)

    def fit_terminal(self, size: Size) -> None:
        self.set_class(too_small(size), "too-small")
