"""The comparison written out: text and markdown (tables, grid, observations), csv and json (raw numbers).

JSON is strict JSON: a figure that is not a finite number (a diverged run's NaN loss) is null.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tuitrain import format as fmt
from tuitrain.catalog import RunFile
from tuitrain.compare.groups import RunGroup, group_header, group_rows
from tuitrain.compare.runs import RunColumn, finite
from tuitrain.core.errors import TuitrainError

if TYPE_CHECKING:
    from tuitrain.compare.model import Comparison

FORMATS = ("text", "markdown", "csv", "json")


def render(c: Comparison, form: str = "text") -> str:
    if form == "json":
        return json.dumps(_json_safe(to_json(c)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header, rows = csv_rows(c)
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    if form == "markdown":
        return _render_sections(c, markdown_table, "## ", "- ")
    if form == "text":
        return _render_sections(c, fmt.text_table, "", "  - ")
    raise TuitrainError(f"unknown format {form!r}; choose one of {', '.join(FORMATS)}.")


def to_json(c: Comparison) -> dict[str, Any]:
    base = c.baseline_run
    runs = []
    for r in c.runs:
        figures = _json_figures(r, c.threshold)
        deltas = None
        if base is not None and base is not r:
            base_figures = _json_figures(base, c.threshold)
            deltas = {
                k: _delta(v, base_figures[k]) for k, v in figures.items() if k not in ("best_epoch", "epochs_done")
            }
        runs.append(
            {
                "index": r.index,
                "label": r.label,
                "path": str(r.file.path),
                "status": r.status,
                "preset": r.record.preset,
                "invocation": r.record.invocation,
                "device": r.device,
                "schema_version": r.record.schema_version,
                "tags": r.record.tags,
                "notes": r.record.notes,
                "original_label": r.record.original_label,
                "spec": r.record.spec.model_dump(mode="json"),
                **figures,
                "delta_vs_baseline": deltas,
                "epochs": [
                    {
                        "epoch": e.epoch,
                        "initial_loss": finite(e.initial_loss),
                        "final_loss": finite(e.final_loss),
                        "mean_loss": finite(e.mean_loss),
                        "test_accuracy": e.test_accuracy,
                        "test_loss": finite(e.test_loss),
                    }
                    for e in r.record.epochs
                ],
            }
        )
    grid = c.grid()
    return {
        "threshold": c.threshold,
        "baseline": base.label if base else None,
        "params_shown": c.shown_params(),
        "differing_params": c.differing_params(),
        "runs": runs,
        "grid": grid.to_json() if grid else None,
        "groups": [
            {
                "label": g.label,
                "seeds": g.seeds,
                "runs": [r.index for r in g.runs],
                "duplicate_of": None if g.duplicate_of is None else g.duplicate_of.index,
                **_json_spreads(g, c.threshold),
            }
            for g in c.groups()
        ],
        "observations": c.observations(),
        "unreadable": [{"path": str(f.path), "reason": f.error} for f in c.unreadable],
    }


def csv_rows(c: Comparison) -> tuple[list[str], list[list[Any]]]:
    """One row per run (unreadable files included, with the reason), raw numbers."""
    params = c.shown_params()
    header = [
        "index",
        "label",
        "path",
        "status",
        *params,
        "final_accuracy",
        "best_accuracy",
        "best_epoch",
        "final_loss",
        f"epoch_reaching_{c.threshold:g}",
        "epochs_done",
        "time_s",
        "device",
        "delta_best_accuracy",
        "delta_final_loss",
        "reason",
        "tags",
        "notes",
    ]
    base = c.baseline_run
    rows: list[list[Any]] = []
    for r in c.runs:
        delta_acc = delta_loss = ""
        if base is not None and base is not r:
            delta_acc = _blank(_delta(r.best_accuracy, base.best_accuracy))
            delta_loss = _blank(_delta(finite(r.final_loss), finite(base.final_loss)))
        rows.append(
            [
                r.index,
                r.label,
                str(r.file.path),
                r.status,
                *(_blank(r.param(p)) for p in params),
                _blank(r.final_accuracy),
                _blank(r.best_accuracy),
                _blank(r.best_epoch),
                _blank(finite(r.final_loss)),
                _blank(r.epoch_reaching(c.threshold)),
                r.epochs_done,
                _blank(r.time_s),
                r.device,
                delta_acc,
                delta_loss,
                r.record.error or "",
                " ".join(r.record.tags),
                r.record.notes or "",
            ]
        )
    for f in c.unreadable:
        rows.append(["", "", str(f.path), "unreadable", *([""] * len(params)), *([""] * 10), _reason(f), "", ""])
    return header, rows


def _render_sections(
    c: Comparison, table: Callable[[list[str], list[list[str]]], str], heading: str, bullet: str
) -> str:
    blocks = []
    title = f"Comparing {len(c.runs)} run(s)"
    if c.unreadable:
        title += f" ({len(c.unreadable)} file(s) unreadable)"
    presets = sorted({fmt.printable(r.record.preset or "–") for r in c.runs})
    if c.runs:
        title += f" from {', '.join(presets)}"
    blocks.append(("# " if heading else "") + title)
    if c.runs:
        note = (
            "" if c.all_params or not c.differing_params() else " (hyperparameters that differ; --all-params for all)"
        )
        if not c.all_params and not c.differing_params() and len(c.runs) > 1:
            note = " (same hyperparameters)"
        blocks.append(f"{heading}Runs{note}\n\n" + table(c.header(), c.table_rows()))
        if any(r.epochs_done for r in c.runs):
            blocks.append(
                f"{heading}Per epoch (initial → final training loss, test accuracy)\n\n"
                + table(c.epoch_header(), c.epoch_table_rows())
            )
        if c.has_repeats():
            blocks.append(
                f"{heading}Across seeds (mean ± sd over each group's seeds)\n\n"
                + table(group_header(c.threshold), group_rows(c.groups(), c.threshold))
            )
        grid = c.grid()
        if grid:
            blocks.append(f"{heading}{grid.title()}\n\n" + table(*grid.table()))
        annotated = c.annotated()
        if annotated:
            blocks.append(f"{heading}Tags and notes\n\n" + "\n".join(bullet + fmt.printable(n) for n in annotated))
        notes = c.observations()
        if notes:
            blocks.append(f"{heading}Observations\n\n" + "\n".join(bullet + n for n in notes))
    if c.unreadable:
        blocks.append(f"{heading}Unreadable\n\n" + "\n".join(f"{bullet}{f.path}: {_reason(f)}" for f in c.unreadable))
    return "\n\n".join(blocks) + "\n"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|") or " "  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _reason(f: RunFile) -> str:
    """The error without the path it starts with (the list shows the path already)."""
    error = f.error or "unreadable"
    prefix = f"{f.path}: "
    return error[len(prefix) :] if error.startswith(prefix) else error


def _delta(value: float | None, other: float | None) -> float | None:
    if value is None or other is None:
        return None
    return value - other


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _json_figures(r: RunColumn, threshold: float) -> dict[str, Any]:
    return {
        "final_accuracy": r.final_accuracy,
        "best_accuracy": r.best_accuracy,
        "best_epoch": r.best_epoch,
        "final_loss": finite(r.final_loss),
        "epoch_reaching_threshold": r.epoch_reaching(threshold),
        "epochs_done": r.epochs_done,
        "time_s": r.time_s,
    }


def _json_safe(value: Any) -> Any:
    """The value with every non-finite float made null, so json.dumps(allow_nan=False) cannot fail."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_spreads(g: RunGroup, threshold: float) -> dict[str, Any]:
    """Mean, sd, min, max and n of each figure over a group's seeds."""
    figures = {
        "final_accuracy": lambda r: r.final_accuracy,
        "best_accuracy": lambda r: r.best_accuracy,
        "epoch_reaching_threshold": lambda r: r.epoch_reaching(threshold),
        "time_s": lambda r: r.time_s,
    }
    out: dict[str, Any] = {}
    for name, value_of in figures.items():
        s = g.spread(value_of)
        out[name] = None if s is None else {"mean": s.mean, "sd": s.sd, "min": s.lo, "max": s.hi, "n": s.n}
    return out
