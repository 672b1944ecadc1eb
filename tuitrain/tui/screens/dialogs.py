"""Small modal dialogs: yes/no confirmation, a line of text to enter, and an error message."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from tuitrain import format as fmt


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True for yes."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextInputScreen(ModalScreen[str | None]):
    """Asks for one line of text (a label, tags, a note); dismisses with it on Enter, or None on Esc."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", id="text-question")
            yield Input(self.value, placeholder=self.placeholder, id="text-answer")
            yield Static("Enter saves, Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#text-answer", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ErrorScreen(ModalScreen[None]):
    """Shows a one-line user error (unknown preset, no data, …) until dismissed."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, message: str, title: str = "Error") -> None:
        super().__init__()
        self.message = message
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-text", id="error-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class LongRunScreen(ModalScreen[str | None]):
    """Before hours of training on a CPU: offers the quick variant; dismisses with "quick", "full" or None."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [
        Binding("v", "answer('quick')", "Quick variant"),
        Binding("f", "answer('full')", "Full preset"),
        Binding("n,escape", "answer(None)", "Cancel"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", id="long-run-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Quick variant (v)", id="quick", variant="primary")
                yield Button("Full (f)", id="full", variant="error")
                yield Button("Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#quick", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)


class MetricPicker(ModalScreen[tuple[str, str] | None]):
    """Picks the metric a chart draws: a per-step series (the left chart) or a per-epoch figure (the right one);
    dismisses with ("step" | "epoch", name), or None."""

    CSS_PATH = "dialogs.tcss"

    BINDINGS = [Binding("escape,m", "close", "Close")]

    def __init__(
        self,
        step_metrics: list[str],
        epoch_metrics: list[str],
        shown: tuple[str, str],
        labels: dict[str, str] | None = None,
    ) -> None:
        """`labels`: how to list a per-step series where not by its name (the training loss's logged name)."""
        super().__init__()
        self.choices = [("step", name) for name in step_metrics] + [("epoch", name) for name in epoch_metrics]
        self.shown = shown
        self.labels = labels or {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Metric to draw (Enter picks, Esc closes)", classes="dialog-text")
            options = [
                Option(
                    f"{'per step ' if kind == 'step' else 'per epoch'}  "
                    + fmt.printable(self.labels.get(name, name) if kind == "step" else name),
                    id=f"{i}",
                )
                for i, (kind, name) in enumerate(self.choices)
            ]
            yield OptionList(*options, id="metrics")

    def on_mount(self) -> None:
        picker = self.query_one("#metrics", OptionList)
        picker.focus()
        if self.shown in self.choices:
            picker.highlighted = self.choices.index(self.shown)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])

    def action_close(self) -> None:
        self.dismiss(None)
