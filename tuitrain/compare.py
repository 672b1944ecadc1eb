"""Comparing saved runs: the numbers, the observations they support, and the exports.

Shared by `tuitrain compare --no-ui` and the app's compare screen; never imports textual and never
writes to a run file. Every figure comes from the run records; nothing is estimated.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from tuitrain import format as fmt
from tuitrain.catalog import RunFile, load_run_file
from tuitrain.core.errors import TuitrainError
from tuitrain.core.spec import RunSpec
from tuitrain.records import RunRecord

DEFAULT_THRESHOLD = 97.0
FORMATS = ("text", "markdown", "csv", "json")

NUM_CLASSES = {"mnist": 10}

# Spec fields that change what a run learns; data_source and log_every are bookkeeping and only
# appear with all parameters shown.
BOOKKEEPING = ("data_source", "log_every")
PARAMS = tuple(RunSpec.model_fields)

# A 'higher' metric is better when larger; deltas against the baseline keep their sign either way.
Z_NOISE = 2.0  # two standard errors: a difference of test accuracies smaller than this is a tie


@dataclass
class RunColumn:
    """One readable run in the comparison, with the figures the table shows."""

    index: int
    """1-based position in the comparison (what --baseline N means)."""
    label: str
    """The run's label, made unique among the compared runs."""
    file: RunFile
    record: RunRecord

    @property
    def status(self) -> str:
        return self.file.status

    @property
    def epochs_done(self) -> int:
        return len(self.record.epochs)

    @property
    def final_accuracy(self) -> Optional[float]:
        return self.record.final_accuracy

    @property
    def best_accuracy(self) -> Optional[float]:
        return self.record.best_accuracy

    @property
    def best_epoch(self) -> Optional[int]:
        if not self.record.epochs:
            return None
        return max(self.record.epochs, key=lambda e: e.test_accuracy).epoch  # first of equal bests

    @property
    def final_loss(self) -> Optional[float]:
        """The last training batch loss (of the last completed epoch, or later if the run was cut short)."""
        if self.record.batch_losses:
            return self.record.batch_losses[-1]
        return self.record.epochs[-1].final_loss if self.record.epochs else None

    def epoch_reaching(self, threshold: float) -> Optional[int]:
        return next((e.epoch for e in self.record.epochs if e.test_accuracy >= threshold), None)

    @property
    def time_s(self) -> Optional[float]:
        """Wall time from start to end; for a run without an end, the sum of its epochs."""
        seconds = fmt.run_time(self.record)
        if seconds is None and self.record.epochs:
            seconds = sum(e.duration_s for e in self.record.epochs)
        return seconds

    @property
    def device(self) -> str:
        return self.record.env.device

    @property
    def test_total(self) -> int:
        return self.record.epochs[-1].test_total if self.record.epochs else 0

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES.get(self.record.spec.dataset, 10)

    def param(self, name: str) -> Any:
        return getattr(self.record.spec, name)


def param_text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _unique_labels(records: Sequence[RunRecord]) -> list[str]:
    """Labels as given (control characters escaped: run files may be hand-made), with the preset name (then a
    counter) added where two runs share one."""
    given = [fmt.printable(r.label or r.id) for r in records]
    labels = [f"{g} ({fmt.printable(r.preset)})" if given.count(g) > 1 and r.preset else g for g, r in zip(given, records)]
    counts: dict[str, int] = {}
    result = []
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
        result.append(label if labels.count(label) == 1 else f"{label} #{counts[label]}")
    return result


def loss_curve(record: RunRecord, points: int = 80, alpha: float = 0.3) -> tuple[list[float], list[float]]:
    """Batch loss downsampled to about `points` bucket means, then EMA-smoothed; x in epochs.

    Non-finite losses (a diverged run's last batches) are left out.
    """
    per_epoch = record.batches_per_epoch or record.spec.batches_per_epoch()
    values = [(i, v) for i, v in enumerate(record.batch_losses) if math.isfinite(v)]
    if not values:
        return [], []
    size = max(1, math.ceil(len(values) / max(points, 1)))
    xs, ys = [], []
    smoothed: Optional[float] = None
    for start in range(0, len(values), size):
        bucket = values[start : start + size]
        mean = sum(v for _, v in bucket) / len(bucket)
        smoothed = mean if smoothed is None else alpha * mean + (1 - alpha) * smoothed
        xs.append((bucket[-1][0] + 1) / per_epoch)
        ys.append(smoothed)
    return xs, ys


def accuracy_curve(record: RunRecord) -> tuple[list[float], list[float]]:
    return [float(e.epoch) for e in record.epochs], [e.test_accuracy for e in record.epochs]


@dataclass
class Grid:
    """Best test accuracy over a sweep of two hyperparameters."""

    row_param: str
    col_param: str
    rows: list[Any]
    cols: list[Any]
    cells: dict[tuple[Any, Any], Optional[float]]

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = [f"{self.row_param} \\ {self.col_param}", *(param_text(c) for c in self.cols)]
        rows = [[param_text(r), *(fmt.accuracy(self.cells.get((r, c))) for c in self.cols)] for r in self.rows]
        return header, rows

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_param": self.row_param, "cols_param": self.col_param, "rows": self.rows, "cols": self.cols,
            "best_accuracy": [[self.cells.get((r, c)) for c in self.cols] for r in self.rows],
        }


def _sorted_values(values: list[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return unique


def _noise(a: RunColumn, b: RunColumn) -> float:
    """Two standard errors (in points) of the difference of two test accuracies."""
    var = 0.0
    for run in (a, b):
        p = (run.best_accuracy or 0.0) / 100.0
        var += p * (1 - p) / max(run.test_total, 1)
    return Z_NOISE * 100.0 * math.sqrt(var)


@dataclass
class Comparison:
    """Runs side by side: what the table, the per-epoch table, the grid and the observations show."""

    runs: list[RunColumn]
    unreadable: list[RunFile] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    all_params: bool = False
    baseline: Optional[int] = None
    """Index (1-based) of the pinned run, or None."""

    @classmethod
    def from_files(cls, files: Sequence[RunFile], **options: Any) -> "Comparison":
        readable = [f for f in files if f.record is not None]
        labels = _unique_labels([f.record for f in readable])
        runs = [RunColumn(index=i + 1, label=label, file=f, record=f.record) for i, (f, label) in enumerate(zip(readable, labels))]
        return cls(runs=runs, unreadable=[f for f in files if f.record is None], **options)

    @classmethod
    def from_paths(cls, paths: Sequence[Path], **options: Any) -> "Comparison":
        return cls.from_files([load_run_file(Path(p)) for p in paths], **options)

    # ---- selection -------------------------------------------------------------------------
    def find_run(self, key: Union[str, int]) -> RunColumn:
        """A run by 1-based index or by label (exact, then unique prefix)."""
        text = str(key).strip()
        if text.isdigit():
            i = int(text)
            if 1 <= i <= len(self.runs):
                return self.runs[i - 1]
            raise TuitrainError(f"--baseline {text}: there are {len(self.runs)} run(s), numbered from 1.")
        exact = [r for r in self.runs if r.label == text]
        matches = exact or [r for r in self.runs if r.label.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        labels = ", ".join(r.label for r in self.runs)
        how = "matches several runs" if matches else "matches no run"
        raise TuitrainError(f"--baseline {text!r} {how}; the runs are: {labels}.")

    @property
    def baseline_run(self) -> Optional[RunColumn]:
        return next((r for r in self.runs if r.index == self.baseline), None)

    def differing_params(self) -> list[str]:
        return [
            name for name in PARAMS
            if name not in BOOKKEEPING and len({param_text(r.param(name)) for r in self.runs}) > 1
        ]

    def shown_params(self) -> list[str]:
        return list(PARAMS) if self.all_params else self.differing_params()

    # ---- the table ---------------------------------------------------------------------------
    def metric_rows(self) -> list[tuple[str, Callable[[RunColumn], Any], Callable[[Any], str], Optional[Callable[[Any], str]]]]:
        """(name, value of a run, text of a value, text of a delta) for each figure row."""
        threshold = f"First epoch ≥ {self.threshold:g}%"
        return [
            ("Final test acc", lambda r: r.final_accuracy, fmt.accuracy, lambda d: f"{d:+.2f}"),
            ("Best test acc", lambda r: r.best_accuracy, fmt.accuracy, lambda d: f"{d:+.2f}"),
            ("Best at epoch", lambda r: r.best_epoch, lambda v: "–" if v is None else str(v), None),
            ("Final train loss", lambda r: r.final_loss, fmt.loss, lambda d: f"{d:+.4f}"),
            (threshold, lambda r: r.epoch_reaching(self.threshold), lambda v: "never" if v is None else str(v), lambda d: f"{d:+d}"),
            ("Epochs", lambda r: r.epochs_done, lambda v: str(v), None),  # shown as done/planned
            ("Training time", lambda r: r.time_s, fmt.duration, lambda d: ("+" if d >= 0 else "-") + fmt.duration(abs(d))),
            ("Device", lambda r: r.device, str, None),
            ("Status", lambda r: r.status, str, None),
        ]

    def cell(self, run: RunColumn, value_of, text_of, delta_of) -> str:
        value = value_of(run)
        text = text_of(value)
        base = self.baseline_run
        if delta_of and base is not None and base is not run and isinstance(value, (int, float)):
            other = value_of(base)
            if isinstance(other, (int, float)) and math.isfinite(value) and math.isfinite(other):
                text += f" ({delta_of(value - other)})"
        return text

    def header(self) -> list[str]:
        return ["", *(f"{r.label} (baseline)" if r.index == self.baseline else r.label for r in self.runs)]

    def table_rows(self) -> list[list[str]]:
        rows = [[name, *(param_text(r.param(name)) for r in self.runs)] for name in self.shown_params()]
        for name, value_of, text_of, delta_of in self.metric_rows():
            if name == "Epochs":
                rows.append([name, *(f"{r.epochs_done}/{r.record.spec.epochs}" for r in self.runs)])
                continue
            rows.append([name, *(self.cell(r, value_of, text_of, delta_of) for r in self.runs)])
        return rows

    # ---- the assignment's per-epoch table ----------------------------------------------------
    def epoch_header(self) -> list[str]:
        cells = ["Epoch"]
        for r in self.runs:
            cells += [f"{r.label}: loss", "acc"]
        return cells

    def epoch_table_rows(self) -> list[list[str]]:
        count = max((r.epochs_done for r in self.runs), default=0)
        rows = []
        for n in range(1, count + 1):
            row = [str(n)]
            for r in self.runs:
                e = r.record.epochs[n - 1] if n <= r.epochs_done else None
                row += [f"{fmt.loss(e.initial_loss)} → {fmt.loss(e.final_loss)}", fmt.accuracy(e.test_accuracy)] if e else ["–", "–"]
            rows.append(row)
        return rows

    # ---- the sweep grid ----------------------------------------------------------------------
    def grid(self) -> Optional[Grid]:
        """Best accuracy over two hyperparameters, when the runs differ in exactly two."""
        names = self.differing_params()
        if len(names) != 2 or len(self.runs) < 3:
            return None
        row_param, col_param = names
        rows = _sorted_values([r.param(row_param) for r in self.runs])
        cols = _sorted_values([r.param(col_param) for r in self.runs])
        combos = {(r.param(row_param), r.param(col_param)) for r in self.runs}
        if len(rows) < 2 or len(cols) < 2 or len(combos) < 0.75 * len(rows) * len(cols):
            return None  # not a sweep: a grid of mostly empty cells says nothing
        cells: dict[tuple[Any, Any], Optional[float]] = {}
        for r in self.runs:
            key = (r.param(row_param), r.param(col_param))
            best = r.best_accuracy
            if best is not None and (cells.get(key) is None or best > cells[key]):
                cells[key] = best
            else:
                cells.setdefault(key, None)
        return Grid(row_param, col_param, rows, cols, cells)

    # ---- observations ------------------------------------------------------------------------
    def observations(self) -> list[str]:
        """Claims the numbers support, each with its numbers."""
        notes: list[str] = []
        trained = [r for r in self.runs if r.epochs_done]
        stuck = {r.index for r in trained if self.at_chance(r)}

        for r in self.runs:
            if r.status == "diverged":
                notes.append(f"{r.label} diverged: {r.record.error or 'non-finite loss'}; "
                             f"{_epochs(r.epochs_done)} completed before it.")
            elif r.status in ("interrupted", "crashed", "failed", "running"):
                why = {"interrupted": "was interrupted", "crashed": "crashed (its process is gone)",
                       "failed": "failed", "running": "is still running"}[r.status]
                error = f" ({r.record.error})" if r.status == "failed" and r.record.error else ""
                notes.append(f"{r.label} {why}{error} after {r.epochs_done}/{r.record.spec.epochs} epochs; "
                             "its figures cover only those.")
        for r in trained:
            if r.index in stuck:
                loss = self.last_mean_loss(r)
                notes.append(
                    f"{r.label} is stuck at chance level: best test accuracy {fmt.accuracy(r.best_accuracy)} "
                    f"(chance {100 / r.num_classes:.0f}% for {r.num_classes} classes), mean training loss of the "
                    f"last epoch {loss:.4f} (ln {r.num_classes} = {math.log(r.num_classes):.4f})."
                )

        ranked = sorted((r for r in trained), key=lambda r: r.best_accuracy, reverse=True)
        if len(ranked) >= 2:
            best, second = ranked[0], ranked[1]
            diff = best.best_accuracy - second.best_accuracy
            noise = _noise(best, second)
            if diff > noise:
                notes.append(
                    f"Best: {best.label} with {fmt.accuracy(best.best_accuracy)} best test accuracy (epoch "
                    f"{best.best_epoch}), {diff:.2f} points above the next, {second.label} "
                    f"({fmt.accuracy(second.best_accuracy)})."
                )
            else:
                notes.append(
                    f"No clear best: {best.label} ({fmt.accuracy(best.best_accuracy)}) and {second.label} "
                    f"({fmt.accuracy(second.best_accuracy)}) differ by {diff:.2f} points, within the "
                    f"±{noise:.2f} noise of {best.test_total:,} test images."
                )
            others = [r for r in ranked[2:] if r.index not in stuck and r.status == "completed"]
            if others:
                worst = others[-1]
                notes.append(f"Lowest: {worst.label} with {fmt.accuracy(worst.best_accuracy)}, "
                             f"{best.best_accuracy - worst.best_accuracy:.2f} points below {best.label}.")
        notes += self._convergence(trained, stuck)
        for r in trained:
            notes += self._instability(r, r.index in stuck)
        timed = [r for r in self.runs if r.time_s and r.status == "completed"]
        if len(timed) >= 2:
            fast = min(timed, key=lambda r: r.time_s)
            slow = max(timed, key=lambda r: r.time_s)
            if slow.time_s > 1.2 * fast.time_s:
                note = (f"Training time: {fast.label} took {fmt.duration(fast.time_s)}, "
                        f"{slow.label} {fmt.duration(slow.time_s)} ({slow.time_s / fast.time_s:.1f}×)")
                # Epochs of one run do the same work: if their times differ a lot, the machine was busy.
                spread = [(max(d) / min(d), r, min(d), max(d)) for r in timed
                          if len(d := [e.duration_s for e in r.record.epochs]) > 1 and min(d) > 0]
                if spread and max(spread, key=lambda x: x[0])[0] > 2:
                    ratio, r, lo, hi = max(spread, key=lambda x: x[0])
                    note += (f"; but epochs of one run took from {fmt.duration(lo)} to {fmt.duration(hi)} "
                             f"({r.label}), so the machine was busy and these times say little about the runs")
                notes.append(note + ".")
        devices = {r.device for r in self.runs}
        if len(devices) > 1:
            notes.append(f"The runs trained on different devices ({', '.join(sorted(devices))}): times are not comparable.")
        return notes

    def last_mean_loss(self, r: RunColumn) -> float:
        return r.record.epochs[-1].mean_loss

    def at_chance(self, r: RunColumn) -> bool:
        """Best accuracy within a few points of 100/classes and last-epoch loss near ln(classes)."""
        chance = 100.0 / r.num_classes
        loss = self.last_mean_loss(r)
        return (r.best_accuracy or 0.0) <= chance * 1.5 and math.isfinite(loss) and abs(loss - math.log(r.num_classes)) <= 0.1 * math.log(r.num_classes)

    def _convergence(self, trained: list[RunColumn], stuck: set[int]) -> list[str]:
        learning = [r for r in trained if r.index not in stuck and r.status != "diverged"]
        if len(learning) < 2:
            return []
        notes = []
        t = f"{self.threshold:g}%"
        reached = sorted((r for r in learning if r.epoch_reaching(self.threshold)), key=lambda r: r.epoch_reaching(self.threshold))
        never = [r for r in learning if not r.epoch_reaching(self.threshold)]
        if reached and (never or reached[0].epoch_reaching(self.threshold) < reached[-1].epoch_reaching(self.threshold)):
            parts = [f"{r.label} at epoch {r.epoch_reaching(self.threshold)}" for r in reached]
            parts += [f"{r.label} never (best {fmt.accuracy(r.best_accuracy)} in {_epochs(r.epochs_done)})" for r in never]
            notes.append(f"Fastest to {t} test accuracy: " + "; ".join(parts) + ".")
        else:
            who = "All runs" if len(learning) == len(trained) else "The runs that learn (" + ", ".join(r.label for r in learning) + ")"
            if reached:
                notes.append(f"{who} first reached {t} at epoch {reached[0].epoch_reaching(self.threshold)}.")
            else:
                notes.append(f"{'No run' if who == 'All runs' else who + ': none'} reached {t} test accuracy.")
        # After the first epoch: split the runs at the widest gap in accuracy, if that gap is beyond noise.
        acc1 = lambda r: r.record.epochs[0].test_accuracy  # noqa: E731
        first = sorted(learning, key=acc1, reverse=True)
        gap, cut = max((acc1(a) - acc1(b), i + 1) for i, (a, b) in enumerate(zip(first, first[1:])))
        if gap > _noise(first[cut - 1], first[cut]):
            listing = ", ".join(f"{r.label} {fmt.accuracy(acc1(r))}" for r in first)
            faster = " and ".join(r.label for r in first[:cut])
            slower = " and ".join(r.label for r in first[cut:])
            verb = "converges" if cut == 1 else "converge"
            notes.append(f"After epoch 1: {listing}; {faster} {verb} faster than {slower} "
                         f"({gap:.2f} points ahead or more).")
        return notes

    def _instability(self, r: RunColumn, stuck: bool) -> list[str]:
        notes = []
        epochs = r.record.epochs
        drops = [(b.test_accuracy - a.test_accuracy, a, b) for a, b in zip(epochs, epochs[1:])]
        if drops and not stuck:
            drop, a, b = min(drops, key=lambda d: d[0])
            p = a.test_accuracy / 100.0
            noise = Z_NOISE * 100.0 * math.sqrt(2 * p * (1 - p) / max(b.test_total, 1))
            if -drop > noise:
                notes.append(f"{r.label}: test accuracy fell from {fmt.accuracy(a.test_accuracy)} (epoch {a.epoch}) "
                             f"to {fmt.accuracy(b.test_accuracy)} (epoch {b.epoch}).")
        rises = [(b.mean_loss - a.mean_loss, a, b) for a, b in zip(epochs, epochs[1:])
                 if math.isfinite(a.mean_loss) and math.isfinite(b.mean_loss)]
        if rises:
            rise, a, b = max(rises, key=lambda d: d[0])
            if rise > 0.02 * abs(a.mean_loss) and rise > 1e-3:
                notes.append(f"{r.label}: mean training loss rose from {a.mean_loss:.4f} (epoch {a.epoch}) to "
                             f"{b.mean_loss:.4f} (epoch {b.epoch}).")
        return notes

    # ---- exports -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        base = self.baseline_run
        runs = []
        for r in self.runs:
            figures = _json_figures(r, self.threshold)
            deltas = None
            if base is not None and base is not r:
                base_figures = _json_figures(base, self.threshold)
                deltas = {k: _delta(v, base_figures[k]) for k, v in figures.items() if k not in ("best_epoch", "epochs_done")}
            runs.append({
                "index": r.index, "label": r.label, "path": str(r.file.path), "status": r.status,
                "preset": r.record.preset, "invocation": r.record.invocation, "device": r.device,
                "schema_version": r.record.schema_version, "spec": r.record.spec.model_dump(mode="json"),
                **figures, "delta_vs_baseline": deltas,
                "epochs": [
                    {"epoch": e.epoch, "initial_loss": _finite(e.initial_loss), "final_loss": _finite(e.final_loss),
                     "mean_loss": _finite(e.mean_loss), "test_accuracy": e.test_accuracy, "test_loss": _finite(e.test_loss)}
                    for e in r.record.epochs
                ],
            })
        grid = self.grid()
        return {
            "threshold": self.threshold,
            "baseline": base.label if base else None,
            "params_shown": self.shown_params(),
            "differing_params": self.differing_params(),
            "runs": runs,
            "grid": grid.to_json() if grid else None,
            "observations": self.observations(),
            "unreadable": [{"path": str(f.path), "reason": f.error} for f in self.unreadable],
        }

    def csv_rows(self) -> tuple[list[str], list[list[Any]]]:
        """One row per run (unreadable files included, with the reason), raw numbers."""
        params = self.shown_params()
        header = ["index", "label", "path", "status", *params, "final_accuracy", "best_accuracy", "best_epoch",
                  "final_loss", f"epoch_reaching_{self.threshold:g}", "epochs_done", "time_s", "device",
                  "delta_best_accuracy", "delta_final_loss", "reason"]
        base = self.baseline_run
        rows: list[list[Any]] = []
        for r in self.runs:
            delta_acc = delta_loss = ""
            if base is not None and base is not r:
                delta_acc = _blank(_delta(r.best_accuracy, base.best_accuracy))
                delta_loss = _blank(_delta(_finite(r.final_loss), _finite(base.final_loss)))
            rows.append([
                r.index, r.label, str(r.file.path), r.status, *(_blank(r.param(p)) for p in params),
                _blank(r.final_accuracy), _blank(r.best_accuracy), _blank(r.best_epoch), _blank(_finite(r.final_loss)),
                _blank(r.epoch_reaching(self.threshold)), r.epochs_done, _blank(r.time_s), r.device,
                delta_acc, delta_loss, r.record.error or "",
            ])
        for f in self.unreadable:
            rows.append(["", "", str(f.path), "unreadable", *([""] * len(params)), *([""] * 10), _reason(f)])
        return header, rows

    def render(self, form: str = "text") -> str:
        if form == "json":
            return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        if form == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            header, rows = self.csv_rows()
            writer.writerow(header)
            writer.writerows(rows)
            return out.getvalue()
        if form == "markdown":
            return self._render_sections(lambda h, rows: markdown_table(h, rows), "## ", "- ")
        if form == "text":
            return self._render_sections(lambda h, rows: fmt.text_table(h, rows), "", "  - ")
        raise TuitrainError(f"unknown format {form!r}; choose one of {', '.join(FORMATS)}.")

    def _render_sections(self, table: Callable[[list[str], list[list[str]]], str], heading: str, bullet: str) -> str:
        blocks = []
        title = f"Comparing {len(self.runs)} run(s)"
        if self.unreadable:
            title += f" ({len(self.unreadable)} file(s) unreadable)"
        presets = sorted({fmt.printable(r.record.preset or "–") for r in self.runs})
        if self.runs:
            title += f" from {', '.join(presets)}"
        blocks.append(("# " if heading else "") + title)
        if self.runs:
            note = "" if self.all_params or not self.differing_params() else " (hyperparameters that differ; --all-params for all)"
            if not self.all_params and not self.differing_params() and len(self.runs) > 1:
                note = " (same hyperparameters)"
            blocks.append(f"{heading}Runs{note}\n\n" + table(self.header(), self.table_rows()))
            if any(r.epochs_done for r in self.runs):
                blocks.append(f"{heading}Per epoch (initial → final training loss, test accuracy)\n\n"
                              + table(self.epoch_header(), self.epoch_table_rows()))
            grid = self.grid()
            if grid:
                blocks.append(f"{heading}Best test accuracy by {grid.row_param} × {grid.col_param}\n\n" + table(*grid.table()))
            notes = self.observations()
            if notes:
                blocks.append(f"{heading}Observations\n\n" + "\n".join(bullet + n for n in notes))
        if self.unreadable:
            blocks.append(f"{heading}Unreadable\n\n" + "\n".join(f"{bullet}{f.path}: {_reason(f)}" for f in self.unreadable))
        return "\n\n".join(blocks) + "\n"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _reason(f: RunFile) -> str:
    """The error without the path it starts with (the list shows the path already)."""
    error = f.error or "unreadable"
    prefix = f"{f.path}: "
    return error[len(prefix):] if error.startswith(prefix) else error


def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is None or math.isfinite(value) else None


def _delta(value: Optional[float], other: Optional[float]) -> Optional[float]:
    if value is None or other is None:
        return None
    return value - other


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _json_figures(r: RunColumn, threshold: float) -> dict[str, Any]:
    return {
        "final_accuracy": r.final_accuracy, "best_accuracy": r.best_accuracy, "best_epoch": r.best_epoch,
        "final_loss": _finite(r.final_loss), "epoch_reaching_threshold": r.epoch_reaching(threshold),
        "epochs_done": r.epochs_done, "time_s": r.time_s,
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|") or " "  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
