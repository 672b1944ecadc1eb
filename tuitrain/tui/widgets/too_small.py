"""Shown instead of a screen's content when the terminal is too small to draw it legibly."""

from __future__ import annotations

from textual.widgets import Static

MIN_WIDTH = 60
MIN_HEIGHT = 18


class TooSmall(Static):
    """Hidden unless the app has the `too-small` class (set on resize)."""

    def __init__(self) -> None:
        super().__init__(
            f"Please enlarge the terminal\n(at least {MIN_WIDTH}x{MIN_HEIGHT}; 80x24 or more is best).\n\nq quits.",
        )
