"""Shown instead of a screen's content when the terminal is too small to draw it legibly; and what a screen
spares between that and the size it is laid out for."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from textual import events
from textual.binding import ActiveBinding
from textual.geometry import Size
from textual.screen import Screen, ScreenResultType
from textual.widgets import Footer, Static

MIN_WIDTH = 60
MIN_HEIGHT = 18
FULL_WIDTH = 80
FULL_HEIGHT = 24
"""The size the screens are laid out for; between the minimum and this they spare what they can (SizedScreen)."""


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
    """A screen that swaps its content for TooSmall in a tiny terminal, and below FULL_WIDTH x FULL_HEIGHT spares
    room: the `narrow` and `short` classes let its styles drop what it can, and a narrow terminal's footer is compact
    and leaves out the keys of NARROW_FOOTER_SPARES (they still work, and the help screen lists them).

    The classes are the screen's own and derived from the terminal size each time the screen is resized or comes
    back to the top: a screen below another one gets no resize, so a class set once by the app went stale when a
    screen was pushed and popped while the terminal was small.
    """

    NARROW_FOOTER_SPARES: ClassVar[frozenset[str]] = frozenset()
    """Actions whose keys a narrow terminal's footer leaves out."""
    COMPACT_FOOTER: ClassVar[bool] = False
    """The footer is compact at any width (its keys take more than 80 columns with Textual's spacing)."""

    def on_resize(self, event: events.Resize) -> None:
        self.fit_terminal(event.size)

    def on_screen_resume(self) -> None:
        self.fit_terminal(self.app.size)

    def fit_terminal(self, size: Size) -> None:
        self.set_class(too_small(size), "too-small")
        self.set_class(size.height < FULL_HEIGHT, "short")
        narrow = size.width < FULL_WIDTH
        for footer in self.query(Footer):
            footer.compact = narrow or self.COMPACT_FOOTER
        if narrow != self.has_class("narrow"):
            self.set_class(narrow, "narrow")
            self.refresh_bindings()  # the footer shows its keys again, or spares some

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Textual's, with the keys the footer spares in a narrow terminal marked not to show (keys work as ever:
        Textual dispatches them by its binding chain, not by this)."""
        bindings = super().active_bindings
        if not self.has_class("narrow") or not self.NARROW_FOOTER_SPARES:
            return bindings
        return {
            key: active._replace(binding=replace(active.binding, show=False))
            if active.binding.action in self.NARROW_FOOTER_SPARES
            else active
            for key, active in bindings.items()
        }
