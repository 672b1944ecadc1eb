"""Plain-text formatting shared by the headless CLI and the app (one place for each shape)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tuitrain.catalog import effective_status
from tuitrain.core.spec import RunSpec
from tuitrain.core.text import printable  # noqa: F401 - fmt.printable for the display modules
from tuitrain.records import RunRecord


def cut(text: str, width: int) -> str:
    """`text`, cut to `width` characters with an ellipsis when longer."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def accuracy(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}%"


def train_line(epoch: int, samples_done: int, train_size: int, last_loss: float) -> str:
    """The PyTorch MNIST example's progress line (without the counts where train_size is 0: not known)."""
    if not train_size:
        return f"Train Epoch: {epoch}\tLoss: {last_loss:.6f}"  # logged points need not be batches of a known size
    pct = 100.0 * samples_done / max(train_size, 1)
    return f"Train Epoch: {epoch} [{samples_done}/{train_size} ({pct:.0f}%)]\tLoss: {last_loss:.6f}"


def test_line(test_loss: float, correct: int, total: int) -> str:
    """The PyTorch MNIST example's test line."""
    return (
        f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{total} ({100.0 * correct / max(total, 1):.2f}%)"
    )


def metric(value: float | None) -> str:
    """An extra metric a script logged for an epoch: 4 significant digits; '' where the epoch has none."""
    return "" if value is None else f"{value:.4g}"


EPOCH_HEADER = ("Epoch", "Initial loss", "Final loss", "Test accuracy")


def epoch_row(e) -> tuple[str, str, str, str]:
    """One row of the assignment's epoch table, from an EpochRecord or an EpochEnded event (same fields)."""
    return (str(e.epoch), loss(e.initial_loss), loss(e.final_loss), accuracy(e.test_accuracy))


def epoch_rows(record: RunRecord) -> list[tuple[str, str, str, str]]:
    """The assignment's per-epoch table rows: epoch, initial batch loss, final batch loss, test accuracy."""
    return [epoch_row(e) for e in record.epochs]


def spec_summary(spec: RunSpec, config: dict[str, Any] | None = None, width: int | None = None) -> str:
    """'model_b/relu, adam lr 0.001, batch 64': a run's settings in one phrase (the activation only where it
    applies). A script run's (config not None) are its own config's 'key=value's: with a `width`, the first ones
    that fit in it (at least one) and '… (N more)' (a framework's config can hold dozens; the integrations keep
    those that differ from the defaults, first)."""
    if config is not None:
        settings = [printable(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}") for k, v in config.items()]
        text = ", ".join(settings)
        if width is None or len(text) <= width:
            return text
        shown: list[str] = []
        for setting in settings:
            more = f", … ({len(settings) - len(shown) - 1} more)"
            if shown and len(", ".join([*shown, setting])) + len(more) > width:
                break
            shown.append(setting if len(setting) <= width else setting[: width - 1] + "…")
        return f"{', '.join(shown)}, … ({len(settings) - len(shown)} more)"
    model = f"{spec.model}/{spec.activation}" if spec.model in ("model_a", "model_b") else spec.model
    return f"{model}, {spec.optimizer} lr {spec.lr:g}, batch {spec.batch_size}"


def run_time(record: RunRecord) -> float | None:
    """A finished run's training time (its epochs' training and evaluation: no pauses, start-up or downtime)."""
    if record.ended_at is None:
        return None
    return record.training_s


def _numeric(cell: str) -> bool:
    text = str(cell).strip().rstrip("%").replace(",", "").replace("→", "").replace(" ", "")
    if text in ("", "–", "-"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return bool(text) and text[0].isdigit()  # durations such as 1m05s


def text_table(header: Iterable[str], rows: Iterable[Iterable[str]], indent: str = "  ") -> str:
    """A plain-text table: numeric columns right-aligned, text columns left-aligned."""
    header = [printable(h) for h in header]
    rows = [[printable(c) for c in r] for r in rows]
    columns = list(zip(header, *rows))
    widths = [max(len(c) for c in col) for col in columns]
    right = [bool(rows) and all(_numeric(c) for c in col[1:]) for col in columns]

    def line(cells: Iterable[str]) -> str:
        return indent + "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def summary(records: list[RunRecord]) -> str:
    """The end-of-preset report: per run, the assignment's epoch table; then one line per run."""
    blocks = []
    for r in records:
        head = (
            f"{printable(r.label)}  ({spec_summary(r.spec, r.config)})  {effective_status(r)}, "
            f"{len(r.epochs)}/{r.spec.epochs} epochs, {duration(run_time(r))}"
        )
        if r.error:
            head += f"\n  {printable(r.error, keep=chr(10))}"
        blocks.append(
            head + ("\n" + text_table(EPOCH_HEADER, epoch_rows(r)) if r.epochs else "\n  (no completed epoch)")
        )
    rows = [
        (r.label, effective_status(r), accuracy(r.final_accuracy), accuracy(r.best_accuracy), duration(run_time(r)))
        for r in records
    ]
    blocks.append(text_table(("Run", "Status", "Final acc", "Best acc", "Time"), rows))
    return "\n\n".join(blocks)
