"""Figures of a comparison as image files (PNG and SVG): training loss, test accuracy per epoch, the learning
rate per epoch (where a run's changed: a schedule or a warm-up), and the sweep grid as a heatmap.
The only module that imports matplotlib (the optional extra `tuitrain[plots]`),
with its non-interactive backend, so a machine without a display can draw them.

Runs that differ only by seed are drawn as one line per group, the mean over its seeds, with the band
between their minimum and maximum.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitrain.compare import (
    Comparison,
    RunColumn,
    accuracy_curve,
    group_curve,
    has_lr_schedule,
    loss_curve,
    lr_curve,
)
from tuitrain.core.errors import TuitrainError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "figures need matplotlib: pip install 'tuitrain[plots]' (or pip install matplotlib)."
PALETTE = [(0, 175, 255), (255, 135, 0), (95, 215, 95), (215, 95, 215), (255, 215, 0), (255, 95, 95), (135, 135, 255)]
"""The app's run colours (tuitrain.tui.widgets.charts.PALETTE, which this module may not import), in order."""
FORMATS = ("png", "svg")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise TuitrainError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # no display needed; never opens a window
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """TuitrainError (exit 2) with how to install it, where matplotlib is missing."""
    _pyplot()


def colour(i: int) -> tuple[float, float, float]:
    r, g, b = PALETTE[i % len(PALETTE)]
    return (r / 255, g / 255, b / 255)


def _lines(ax: Any, c: Comparison, curve: Any, marker: str | None) -> None:
    for i, g in enumerate(c.groups()):
        xs, mean, lo, hi = group_curve([r.record for r in g.runs], curve)
        if not xs:
            continue
        label = g.label if g.n == 1 else f"{g.label} (mean of {g.n} seeds, band min–max)"
        ax.plot(xs, mean, color=colour(i), label=label, marker=marker, linewidth=1.6)
        if g.n > 1:
            ax.fill_between(xs, lo, hi, color=colour(i), alpha=0.2, linewidth=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no run has this curve (e.g. no accuracy): no empty legend, no warning
        ax.legend(fontsize=8, loc="best")


def loss_figure(c: Comparison, log_scale: bool = False) -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _lines(ax, c, loss_curve, None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, smoothed)" + (", log scale" if log_scale else ""))
    if log_scale:
        ax.set_yscale("log")
    ax.set_title("Training loss per batch, smoothed")
    fig.tight_layout()
    return fig


def _per_epoch_figure(c: Comparison, curve: Any, ylabel: str, title: str, height: float, **ylim: float) -> Figure:
    """One marked line per run of a per-epoch figure, x in whole epochs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, height))
    _lines(ax, c, curve, "o")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ylim:
        ax.set_ylim(**ylim)
    fig.tight_layout()
    return fig


def accuracy_figure(c: Comparison) -> Figure:
    return _per_epoch_figure(c, accuracy_curve, "test accuracy (%)", "Test accuracy after each epoch", 4.5)


def lr_figure(c: Comparison) -> Figure:
    return _per_epoch_figure(
        c, lr_curve, "learning rate", "Learning rate of each epoch (warm-up and schedule)", 3.5, bottom=0
    )


def grid_figure(c: Comparison) -> Figure | None:
    grid = c.grid()
    if grid is None:
        return None
    plt = _pyplot()
    header, rows = grid.table()
    values = [[grid.cells.get((r, col)) for col in grid.cols] for r in grid.rows]
    data = [[math.nan if v is None else v for v in row] for row in values]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(grid.cols), 1.4 + 0.8 * len(grid.rows)))
    image = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(grid.cols)), header[1:])
    ax.set_yticks(range(len(grid.rows)), [row[0] for row in rows])
    ax.set_xlabel(grid.col_param)
    ax.set_ylabel(grid.row_param)
    for y, row in enumerate(rows):
        for x, text in enumerate(row[1:]):
            ax.text(x, y, text, ha="center", va="center", color="white", fontsize=9)
    what = "mean best test accuracy over seeds" if grid.mean_over_seeds else "best test accuracy"
    ax.set_title(f"{what[0].upper()}{what[1:]} (%) by {grid.row_param} × {grid.col_param}")
    fig.colorbar(image, ax=ax, label="%")
    fig.tight_layout()
    return fig


def confusion_figure(runs: Sequence[RunColumn]) -> Figure:
    """Each run's final test confusion matrix side by side (three to a row): counts in the cells, coloured by their
    share of the true class (on a power scale, so that a few confusions among a thousand images show)."""
    plt = _pyplot()
    from matplotlib.colors import PowerNorm

    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(runs) :]:
        ax.set_axis_off()
    for ax, run in zip(axes.flat, runs):
        matrix = run.final_confusion or []
        names = run.class_names
        shares = [[n / max(sum(row), 1) for n in row] for row in matrix]
        ax.imshow(shares, cmap="Blues", norm=PowerNorm(gamma=0.35, vmin=0, vmax=1))
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize=7, rotation=90 if max(map(len, names)) > 2 else 0)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for t, row in enumerate(matrix):
            for p, n in enumerate(row):
                if n:
                    dark = shares[t][p] > 0.3
                    ax.text(p, t, str(n), ha="center", va="center", fontsize=6, color="white" if dark else "black")
        ax.set_title(f"{run.label} (epoch {run.epochs_done})", fontsize=9)
    fig.tight_layout()
    return fig


def figures(c: Comparison, log_loss: bool = False) -> list[tuple[str, str, Figure]]:
    """(file stem, caption, figure) for each figure the comparison has."""
    out: list[tuple[str, str, Figure]] = []
    if not any(r.epochs_done or r.record.batch_losses for r in c.runs):
        return out
    out.append(("loss", "Training loss (smoothed)", loss_figure(c, log_loss)))
    if any(r.epochs_done for r in c.runs):
        out.append(("accuracy", "Test accuracy per epoch", accuracy_figure(c)))
    if any(has_lr_schedule(r.record) for r in c.runs):
        out.append(("lr", "Learning rate per epoch", lr_figure(c)))
    grid = grid_figure(c)
    if grid is not None:
        out.append(("grid", "Sweep grid", grid))
    return out


def write_figures(c: Comparison, folder: Path, log_loss: bool = False) -> list[Path]:
    """Each figure as PNG and SVG in `folder` (made if missing); the paths written. TuitrainError when the
    folder cannot be written."""
    plt = _pyplot()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuitrainError(f"{folder}: cannot make the folder ({exc.strerror or exc}).") from None
    written = []
    for stem, _, fig in figures(c, log_loss):
        try:
            for form in FORMATS:
                path = folder / f"{stem}.{form}"
                fig.savefig(path, format=form, dpi=120)
                written.append(path)
        except OSError as exc:
            raise TuitrainError(f"{folder}: cannot write the figures ({exc.strerror or exc}).") from None
        finally:
            plt.close(fig)
    return written


def close(fig: Figure) -> None:
    """Free a figure (pyplot keeps every figure it made until closed)."""
    _pyplot().close(fig)


def svg_text(fig: Figure) -> str:
    """The figure as SVG markup (without the XML declaration and doctype), for inlining in HTML."""
    out = io.StringIO()
    fig.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg") :]
