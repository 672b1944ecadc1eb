"""`tuitrain report`: the assignment's report written from saved runs, as Markdown (figures as files beside
it, linked relatively) or as one self-contained HTML file (figures inlined as SVG).

Per preset invocation: its title, the settings that matter, the per-epoch table in the assignment's
layout (Epoch, Initial training loss, Final training loss, Test accuracy), the figures, each run's test
confusion matrix at its final epoch (one figure, or a table per run without figures), the summary table
(mean ± sd across seeds when there are repeats) and the written observations.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuitrain import format as fmt
from tuitrain.catalog import (
    PLAN_FILE,
    RunFile,
    load_run_arguments,
    refuse_nothing_readable,
    tagged_runs,
    unreadable_exit_code,
)
from tuitrain.compare import DEFAULT_THRESHOLD, Comparison, has_lr_schedule, markdown_table, param_text
from tuitrain.compare.groups import IGNORED, RunGroup, group_header, group_rows, spread
from tuitrain.compare.runs import RunColumn
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.confusion import class_accuracy
from tuitrain.core.errors import TuitrainError

REPORT_FORMATS = ("markdown", "html")


# ---- the report as blocks, written out as Markdown or HTML ------------------------------------
@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    stem: str
    caption: str
    figure: Any
    """A matplotlib Figure (tuitrain.plots)."""


@dataclass
class Report:
    title: str
    blocks: list[Any] = field(default_factory=list)


def invocations(files: Sequence[RunFile]) -> list[list[RunFile]]:
    """Readable run files grouped by preset invocation (or by folder, for runs without one), first-seen order."""
    groups: dict[str, list[RunFile]] = {}
    for f in files:
        if f.record is not None:
            groups.setdefault(f.record.invocation or str(f.path.parent), []).append(f)
    return list(groups.values())


def plan_title(folder: Path) -> str | None:
    """The preset's title as its invocation folder's plan recorded it, if it can be read."""
    try:
        title = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8")).get("title")
    except (OSError, ValueError, AttributeError):
        return None
    return fmt.printable(title) if isinstance(title, str) else None


def shared_settings(c: Comparison) -> str:
    """The settings every run shares, as one line: 'model model_a, optimizer adam, lr 0.001, …'."""
    differing = set(c.differing_params())
    first = c.runs[0]
    parts = [
        f"{name} {param_text(first.param(name))}"
        for name in type(first.record.spec).model_fields
        if name not in differing and name not in IGNORED and first.param(name) is not None
    ]
    return ", ".join(parts)


EPOCH_HEADER = ["Epoch", "Initial training loss", "Final training loss", "Test accuracy"]
EXTRA_EPOCH_COLUMNS = (("train_accuracy", "Training accuracy"), ("val_accuracy", "Validation accuracy"))
"""Per-epoch figures shown after the assignment's columns where the runs recorded them."""


def epoch_columns(group: RunGroup) -> list[str]:
    """The per-epoch table's header: the assignment's columns, then the training and validation accuracy where
    recorded, and the learning rate where it changed over the epochs (a schedule or a warm-up)."""
    epochs = [e for r in group.runs for e in r.record.epochs]
    header = EPOCH_HEADER + [t for key, t in EXTRA_EPOCH_COLUMNS if any(getattr(e, key) is not None for e in epochs)]
    if any(has_lr_schedule(r.record) for r in group.runs):
        header.append("Learning rate")
    return header


def epoch_rows(group: RunGroup, header: list[str] | None = None) -> list[list[str]]:
    """The assignment's per-epoch table for a run, or for a group its mean ± sd over seeds; the columns of
    `header` (epoch_columns) past the assignment's too."""
    count = max(r.epochs_done for r in group.runs)
    extra = dict((title, key) for key, title in EXTRA_EPOCH_COLUMNS)
    rows = []
    for n in range(1, count + 1):
        epochs = [r.record.epochs[n - 1] for r in group.runs if r.epochs_done >= n]
        initial = spread([e.initial_loss for e in epochs])
        final = spread([e.final_loss for e in epochs])
        accuracy = spread([e.test_accuracy for e in epochs])
        row = [
            str(n),
            "–" if initial is None else initial.text(digits=4),
            "–" if final is None else final.text(digits=4),
            "–" if accuracy is None else accuracy.text(unit="%"),
        ]
        for title in (header or EPOCH_HEADER)[len(EPOCH_HEADER) :]:
            if title in extra:
                figure = spread([getattr(e, extra[title]) for e in epochs])
                row.append("–" if figure is None else figure.text(unit="%"))
            else:  # the learning rate: the same for every seed of a group
                lrs = sorted({e.lr for e in epochs if e.lr is not None})
                row.append(" / ".join(f"{lr:.4g}" for lr in lrs) or "–")
        rows.append(row)
    return rows


def confusion_table(run: RunColumn) -> Table:
    """A run's final test confusion matrix as a table: a row per true class, a column per predicted one, then the
    class's accuracy."""
    matrix = run.final_confusion or []
    names = run.class_names
    header = ["true \\ predicted", *names, "Accuracy"]
    rows = [
        [names[t], *(str(n) for n in row), fmt.accuracy(accuracy)]
        for t, (row, accuracy) in enumerate(zip(matrix, class_accuracy(matrix), strict=True))
    ]
    return Table(header, rows)


def confusion_blocks(c: Comparison, with_figures: bool) -> list[Any]:
    """Each run's test confusion matrix at its final epoch: one figure of them all (matplotlib), else a table per
    run. Nothing for runs without one (script runs, files from before it was recorded)."""
    runs = [r for r in c.runs if r.final_confusion is not None]
    if not runs:
        return []
    blocks: list[Any] = [
        Heading(3, "Confusion matrices (final epoch)"),
        Paragraph(
            "Test images by true class (rows) and predicted class (columns) at each run's last epoch; "
            + ("the colour is the cell's share of its true class." if with_figures else "then each class's accuracy.")
        ),
    ]
    if with_figures:
        from tuitrain.plots import confusion_figure

        caption = "Test confusion matrix at the final epoch" + (" of each run" if len(runs) > 1 else "")
        return [*blocks, Figure("confusion", caption, confusion_figure(runs))]
    for r in runs:
        blocks += [Paragraph(f"**{r.label}** (epoch {r.epochs_done})"), confusion_table(r)]
    return blocks


def experiment_blocks(c: Comparison, title: str, log_loss: bool, with_figures: bool) -> list[Any]:
    blocks: list[Any] = [Heading(2, title)]
    presets = sorted({fmt.printable(r.record.preset or "–") for r in c.runs})
    invocation = c.runs[0].record.invocation or "–"
    blocks.append(
        Paragraph(f"Preset {', '.join(presets)}, invocation {fmt.printable(invocation)}: {len(c.runs)} run(s).")
    )
    blocks.append(Paragraph(f"Settings shared by every run: {shared_settings(c)}."))
    differing = [p for p in c.differing_params() if p != "seed"]
    if differing:
        blocks.append(Paragraph(f"Varied: {', '.join(differing)}."))
    groups = c.groups()
    seeds = sorted({s for g in groups for s in g.seeds if s is not None})
    repeats = c.has_repeats()
    if repeats:
        blocks.append(Paragraph(f"Each configuration trained with seeds {', '.join(map(str, seeds))}."))

    blocks.append(Heading(3, "Per epoch" + (" (mean ± sd over seeds)" if repeats else "")))
    for g in groups:
        if not any(r.epochs_done for r in g.runs):
            continue
        label = g.label if g.n == 1 else f"{g.label} (n={g.n}, seeds {g.seeds_text()})"
        blocks.append(Paragraph(f"**{label}**"))
        header = epoch_columns(g)
        blocks.append(Table(header, epoch_rows(g, header)))

    if with_figures:
        from tuitrain.plots import figures

        shown = figures(c, log_loss)
        if shown:
            blocks.append(Heading(3, "Figures"))
            blocks += [Figure(stem, caption, fig) for stem, caption, fig in shown]

    blocks += confusion_blocks(c, with_figures)

    blocks.append(Heading(3, "Summary"))
    if repeats:
        blocks.append(Table(group_header(c.threshold), group_rows(groups, c.threshold)))
    blocks.append(Table(c.header(), c.table_rows()))
    grid = c.grid()
    if grid:
        blocks.append(Heading(3, grid.title()))
        blocks.append(Table(*grid.table()))
    annotated = c.annotated()
    if annotated:
        blocks.append(Heading(3, "Tags and notes"))
        blocks.append(Bullets([fmt.printable(n) for n in annotated]))
    notes = c.observations()
    if notes:
        blocks.append(Heading(3, "Observations"))
        blocks.append(Bullets(notes))
    return blocks


def build_report(
    files: Sequence[RunFile], threshold: float = DEFAULT_THRESHOLD, log_loss: bool = False, with_figures: bool = True
) -> Report:
    parts = invocations(files)
    titles = []
    blocks: list[Any] = []
    for part in parts:
        c = Comparison.from_files(part, threshold=threshold)
        record = part[0].record
        assert record is not None
        title = plan_title(part[0].path.parent) or fmt.printable(record.preset or record.invocation or "Runs")
        titles.append(title)
        part_blocks = experiment_blocks(c, title, log_loss, with_figures)
        if len(parts) == 1:  # one experiment: its title is the report's, and its sections one level up (# then ##)
            part_blocks = [Heading(b.level - 1, b.text) if isinstance(b, Heading) else b for b in part_blocks[1:]]
        blocks += part_blocks
    unreadable = [f for f in files if f.record is None]
    if unreadable:
        blocks.append(Heading(2, "Unreadable run files"))
        blocks.append(Bullets([f.error or f"{f.path}: unreadable" for f in unreadable]))
    title = titles[0] if len(titles) == 1 else f"Report on {len(titles)} experiments"
    return Report(title=title, blocks=blocks)


# ---- Markdown -----------------------------------------------------------------------------------
def to_markdown(report: Report, figures_dir: Path | None, relative_to: Path) -> str:
    """The report as Markdown; each figure is written as PNG and SVG into `figures_dir`, linked relatively."""
    from tuitrain.plots import FORMATS

    lines = [f"# {report.title}"]
    used: dict[str, int] = {}
    for block in report.blocks:
        if isinstance(block, Heading):
            lines.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            lines.append(block.text)
        elif isinstance(block, Table):
            lines.append(markdown_table(block.header, block.rows))
        elif isinstance(block, Bullets):
            lines.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Figure) and figures_dir is not None:
            used[block.stem] = used.get(block.stem, 0) + 1
            stem = f"{used[block.stem]}-{block.stem}"
            for form in FORMATS:
                save_figure(block.figure, figures_dir / f"{stem}.{form}", form)
            link = Path(os.path.relpath(figures_dir / f"{stem}.png", relative_to)).as_posix()
            svg = Path(os.path.relpath(figures_dir / f"{stem}.svg", relative_to)).as_posix()
            lines.append(f"![{block.caption}]({link})\n\n{block.caption} ([SVG]({svg}))")
    return "\n\n".join(lines) + "\n"


def save_figure(figure: Any, path: Path, form: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format=form, dpi=120)
    except OSError as exc:
        raise TuitrainError(f"{path}: cannot write the figure ({exc.strerror or exc}).") from None


# ---- HTML ---------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _inline(text: str) -> str:
    """Escaped text, with the one piece of Markdown the blocks use (**bold**) as <strong>."""
    escaped = html.escape(text)
    if escaped.startswith("**") and escaped.endswith("**") and len(escaped) > 4:
        return f"<strong>{escaped[2:-2]}</strong>"
    return escaped


def to_html(report: Report) -> str:
    from tuitrain.plots import svg_text

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for block in report.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Figure):
            out.append(
                f"<figure>{svg_text(block.figure)}<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- the command --------------------------------------------------------------------------------
DESCRIPTION = """\
Write the assignment's report from saved runs: per experiment its settings, the per-epoch table
(initial and final training loss, test accuracy), loss and accuracy figures, each run's confusion
matrix at its final epoch, the summary table (mean ± sd across seeds when runs were repeated) and the
observations (among them the most confused pair of classes).

  tuitrain report                              the latest preset invocation in runs/, to report.md
  tuitrain report runs/2024*-activations-* --output activations.md
  tuitrain report RUNS --format html --output report.html   one file, figures inlined
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuitrain report", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="*", metavar="RUN_FILE|DIR|GLOB", help="run files, folders of them, or glob patterns")
    p.add_argument("--output", type=Path, metavar="FILE", help="where to write (default: report.md or report.html)")
    p.add_argument("--format", choices=REPORT_FORMATS, default=None, help="markdown (default) or html")
    p.add_argument("--log-loss", action="store_true", help="draw the training loss on a log scale")
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="PCT", help="accuracy for 'first epoch ≥'"
    )
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where to look when no path is given"
    )
    p.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="only runs tagged TAG (repeat: every tag); with no path, any run under --runs-dir (tuitrain tag)",
    )
    return p


def write_report(
    files: Sequence[RunFile],
    output: Path,
    form: str = "markdown",
    threshold: float = DEFAULT_THRESHOLD,
    log_loss: bool = False,
) -> list[Path]:
    """Write the report (and, for Markdown, its figures in `<output stem>-figures/` beside it); the paths
    written. TuitrainError for no runs, matplotlib missing, or an output that cannot be written."""
    from tuitrain.plots import require_matplotlib

    refuse_nothing_readable(files, "report")
    compared = {f.path.resolve() for f in files}
    if output.resolve() in compared:
        raise TuitrainError(f"{output}: is one of the run files; choose another --output.")
    if output.is_dir():
        raise TuitrainError(f"{output}: is a folder; give a file name, e.g. {output / ('report.' + _suffix(form))}.")
    require_matplotlib()
    report = build_report(files, threshold=threshold, log_loss=log_loss)
    figures_dir = output.parent / f"{output.stem}-figures"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        text = to_html(report) if form == "html" else to_markdown(report, figures_dir, output.parent)
        atomic_write_text(output, text)
    except OSError as exc:
        raise TuitrainError(f"{output}: cannot write ({exc.strerror or exc}).") from None
    finally:
        _close_figures(report)
    written = [output]
    if form != "html" and figures_dir.is_dir():
        written += sorted(figures_dir.iterdir())
    return written


def _close_figures(report: Report) -> None:
    from tuitrain.plots import close

    for block in report.blocks:
        if isinstance(block, Figure):
            close(block.figure)


def _suffix(form: str) -> str:
    return "html" if form == "html" else "md"


def cmd_report(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    form = args.format or (
        "html" if args.output is not None and args.output.suffix.lower() in (".html", ".htm") else "markdown"
    )
    output = args.output or Path(f"report.{_suffix(form)}")
    if args.tag:
        files = tagged_runs(args.paths, args.runs_dir, args.tag, "report")
    else:
        files = load_run_arguments(args.paths, args.runs_dir)
    if not files:
        raise TuitrainError(f"nothing to report: {args.runs_dir} holds no runs of a preset; pass run files or folders.")
    written = write_report(files, output, form, threshold=args.threshold, log_loss=args.log_loss)
    figures = len(written) - 1
    print(
        f"Wrote {output} ({form}" + (f", {figures} figure files beside it)" if figures else ")") + ".", file=sys.stderr
    )
    for f in files:
        if f.record is None:
            print(f"unreadable: {f.error or f.path}", file=sys.stderr)
    return unreadable_exit_code(files)
