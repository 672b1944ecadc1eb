"""The run screen's confusion matrix: one run's latest test confusion matrix as counts, its cells shaded by their
share of their class, each class's accuracy beside its row, and the most confused pair under it.

Laid out for 80x24: a line naming the run and epoch, a header, a row per class (ten for the datasets tuitrain
knows) and a line for the most confused pair, about 60 columns wide.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from tuitrain import format as fmt
from tuitrain.core.confusion import Matrix, class_accuracy, class_names, confusion_text, most_confused
from tuitrain.core.events import EpochEnded
from tuitrain.monitor import RunState
from tuitrain.tui.widgets.charts import run_style

HEAT = ((0.005, ""), (0.02, "yellow"), (0.05, "bold orange1"), (1.01, "bold white on red3"))
"""The style of a cell off the diagonal by its share of its class's test images: below 0.5% plain, then warmer."""
DIAGONAL = "bold green"
SHORT_NAME = 3
"""Names up to this long (digits, KMNIST's romanised hiragana) head the columns; longer ones are numbered."""
ROW_NAME = 9
CORNER = "true\\pred"
"""Above the row labels: rows are true classes, columns predicted ones."""


def cell_style(count: int, row_total: int, diagonal: bool) -> str:
    if diagonal:
        return DIAGONAL
    if count == 0:
        return "dim"
    share = count / max(row_total, 1)
    return next(style for limit, style in HEAT if share < limit)


def matrix_text(matrix: Matrix, names: Sequence[str]) -> Text:
    """The matrix as lines: a header of predicted classes, then per true class its counts and its accuracy."""
    short = all(len(n) <= SHORT_NAME for n in names)
    heads = [n if short else str(i) for i, n in enumerate(names)]
    rows = [n if short else f"{i} {n[: ROW_NAME - 2]}" for i, n in enumerate(names)]
    label_w = max(len(CORNER) + 1, *(len(r) for r in rows)) if rows else len(CORNER) + 1
    width = max(3, *(len(str(n)) for row in matrix for n in row), *(len(h) for h in heads)) + 1
    accuracies = class_accuracy(matrix)
    measured = [a for a in accuracies if a is not None]
    weakest = min(measured) if len(measured) > 1 else None
    text = Text()
    text.append(CORNER.ljust(label_w), style="dim")
    for h in heads:
        text.append(h.rjust(width), style="bold")
    text.append("      acc\n", style="bold")
    for t, row in enumerate(matrix):
        total = sum(row)
        text.append(rows[t].ljust(label_w), style="bold")
        for p, n in enumerate(row):
            text.append(("·" if n == 0 else str(n)).rjust(width), style=cell_style(n, total, t == p))
        accuracy = accuracies[t]
        style = "bold red" if accuracy is not None and accuracy == weakest else ""
        text.append(f"  {fmt.accuracy(accuracy):>7}", style=style)
        text.append("\n")
    return text


def latest_matrix(run: RunState) -> EpochEnded | None:
    """The run's last epoch that has a confusion matrix."""
    return next((e for e in reversed(run.epochs) if e.confusion is not None), None)


class ConfusionPanel(Static):
    """Shows a run's latest confusion matrix (`show`), or why there is none."""

    def show(self, run: RunState | None) -> None:
        epoch = latest_matrix(run) if run is not None else None
        if run is None or epoch is None or epoch.confusion is None:
            if run is not None and run.epochs:
                why = f"{run.label} records no confusion matrix (script runs and files from older versions do not)."
            else:
                why = "No confusion matrix yet: the first comes with the first epoch's evaluation."
            self.update(Text(fmt.printable(why), style="dim"))
            return
        matrix = epoch.confusion
        names = class_names(run.spec.dataset, len(matrix))
        text = Text()
        text.append("Confusion matrix · ", style="bold")
        text.append(fmt.printable(run.label), style=run_style(run.run_id, run.run_index).markup)
        of = f" of {run.spec.epochs}" if run.epochs_known else ""
        text.append(f" · epoch {epoch.epoch}{of} · test images\n", style="dim")
        text.append_text(matrix_text(matrix, names))
        worst = most_confused(matrix)
        text.append("Most confused: " + (confusion_text(worst, names) if worst else "none, every image right") + ".")
        self.update(text)
