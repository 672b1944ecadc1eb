"""The comparison model: the runs, which one is the baseline, the hyperparameters shown, the figure rows
of the table, the per-epoch table and the sweep grid."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuitrain import format as fmt
from tuitrain.catalog import RunFile, load_run_file
from tuitrain.compare import exports, groups, observations
from tuitrain.compare.runs import RunColumn, param_text, unique_labels
from tuitrain.core.errors import TuitrainError
from tuitrain.core.spec import RunSpec
from tuitrain.keeper import is_training_loss

DEFAULT_THRESHOLD = 97.0
NOTE_CELL = 30
"""A run's note in the comparison's table is cut to this (the Notes section has it whole)."""

# Spec fields that change what a run learns; data_source and log_every are bookkeeping and only
# appear with all parameters shown.
BOOKKEEPING = ("data_source", "log_every")
PARAMS = tuple(RunSpec.model_fields)
CUSTOM_MODEL_PARAMS = ("model_args", "model_dir")
"""Spec fields that only a "module:Attr" model uses."""


def _figure(text_of: Callable[[Any], str]) -> Callable[[Any], str]:
    """A figure's text, with '–' for a missing or non-finite number (never 'nan%')."""
    return lambda v: "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else text_of(v)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def _signed_duration(d: float) -> str:
    return ("+" if d >= 0 else "-") + fmt.duration(abs(d))


def _unsigned_zero(delta: str) -> str:
    """'+0.00', '-0s' -> '0.00', '0s': a difference that rounds to nothing has no direction."""
    return delta[1:] if delta[:1] in "+-" and not any(c in "123456789" for c in delta) else delta


@dataclass(frozen=True)
class Metric:
    """One figure row of the table: how to get a run's value, how to show it, how to show a delta."""

    name: str
    value_of: Callable[[RunColumn], Any]
    text_of: Callable[[Any], str] = str
    delta_of: Callable[[Any], str] | None = None
    """The text of (value - baseline's value); None where a difference means nothing."""

    def cell(self, run: RunColumn, baseline: RunColumn | None) -> str:
        value = self.value_of(run)
        text = self.text_of(value)
        if self.delta_of is None or baseline is None or baseline is run:
            return text
        other = self.value_of(baseline)
        if _number(value) and _number(other):
            text += f" ({_unsigned_zero(self.delta_of(value - other))})"
        return text


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _extra_metric(name: str) -> Metric:
    """The figure row of an extra metric that script runs logged: its value at each run's last epoch."""

    def value_of(run: RunColumn) -> float | None:
        return run.final_metric(name)

    return Metric(f"Final {fmt.printable(name)}", value_of, _figure(fmt.metric), lambda d: f"{d:+.4g}")


@dataclass
class Grid:
    """Best test accuracy over a sweep of two hyperparameters."""

    row_param: str
    col_param: str
    rows: list[Any]
    cols: list[Any]
    cells: dict[tuple[Any, Any], float | None]
    mean_over_seeds: bool = False
    """Each cell is the mean over the seeds of its settings (otherwise the best run's)."""

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = [f"{self.row_param} \\ {self.col_param}", *(param_text(c) for c in self.cols)]
        rows = [[param_text(r), *(fmt.accuracy(self.cells.get((r, c))) for c in self.cols)] for r in self.rows]
        return header, rows

    def title(self) -> str:
        what = "Mean best test accuracy over seeds" if self.mean_over_seeds else "Best test accuracy"
        return f"{what} by {self.row_param} × {self.col_param}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_param": self.row_param,
            "cols_param": self.col_param,
            "rows": self.rows,
            "cols": self.cols,
            "best_accuracy": [[self.cells.get((r, c)) for c in self.cols] for r in self.rows],
        }


def _sorted_values(values: list[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return unique


@dataclass
class Comparison:
    """Runs side by side: what the table, the per-epoch table, the grid and the observations show."""

    runs: list[RunColumn]
    unreadable: list[RunFile] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    all_params: bool = False
    baseline: int | None = None
    """Index (1-based) of the pinned run, or None."""
    metric: str | None = None
    """The metric runs are ranked by (`--metric`); None: test accuracy where every run has it, else the first
    metric the runs define a goal for, else a held-out loss they logged, else the training loss."""

    _goals: dict[str, str] = field(default_factory=dict, repr=False)
    """goal() per metric name, found once (the runs do not change)."""

    @classmethod
    def from_files(cls, files: Sequence[RunFile], **options: Any) -> Comparison:
        readable = [(f, f.record) for f in files if f.record is not None]
        labels = unique_labels([record for _, record in readable])
        runs = [
            RunColumn(index=i + 1, label=label, file=f, record=record)
            for i, ((f, record), label) in enumerate(zip(readable, labels))
        ]
        return cls(runs=runs, unreadable=[f for f in files if f.record is None], **options)

    @classmethod
    def from_paths(cls, paths: Sequence[Path], **options: Any) -> Comparison:
        return cls.from_files([load_run_file(Path(p)) for p in paths], **options)

    # ---- selection -------------------------------------------------------------------------
    def find_run(self, key: str | int) -> RunColumn:
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
    def baseline_run(self) -> RunColumn | None:
        return next((r for r in self.runs if r.index == self.baseline), None)

    def params(self) -> list[str]:
        """Every hyperparameter of the compared runs: the spec's fields (those of "module:Attr" models only where a
        run has one), then script runs' config keys."""
        names = dict.fromkeys(PARAMS)
        if not any(":" in r.record.spec.model for r in self.runs if r.record.config is None):
            for name in CUSTOM_MODEL_PARAMS:
                del names[name]
        for r in self.runs:
            names.update(dict.fromkeys(r.record.config or {}))
        return list(names)

    def differing_params(self) -> list[str]:
        return [name for name in self.params() if name not in BOOKKEEPING and self._differs(name)]

    def _differs(self, name: str) -> bool:
        values = [r.param(name) for r in self.runs]
        if name in RunSpec.model_fields:
            # a script run that does not set a spec field (its config has no such key) says nothing about it
            values = [v for v, r in zip(values, self.runs) if r.record.config is None or name in r.record.config]
        return len({param_text(v) for v in values}) > 1

    def shown_params(self) -> list[str]:
        return self.params() if self.all_params else self.differing_params()

    def extra_metrics(self) -> list[str]:
        """Names of the extra per-epoch metrics that script runs logged, in first-seen order."""
        names: dict[str, None] = {}
        for r in self.runs:
            for e in r.record.epochs:
                names.update(dict.fromkeys(e.metrics))
        return list(names)

    # ---- ranking by a metric -------------------------------------------------------------------
    def ranking_metric(self) -> str | None:
        """The metric runs are ranked by besides accuracy: the chosen one, else one the runs have; None where every
        run measures accuracy and none was chosen (accuracy ranks them, as before)."""
        if self.metric is not None:
            return self.metric
        trained = [r for r in self.runs if r.epochs_done]
        if all(r.has_accuracy for r in trained) and not any(r.record.series for r in self.runs):
            return None  # classifiers (or nothing trained yet): accuracy ranks them
        names: dict[str, None] = {}
        for r in self.runs:
            names.update(dict.fromkeys(n for n in r.record.metric_goals if not any(ch in n for ch in "*?[")))
        names.update(dict.fromkeys(self.extra_metrics()))
        for r in self.runs:
            names.update(dict.fromkeys(r.record.series))
        held_out = [n for n in names if "loss" in n.lower() and not is_training_loss(n)]
        defined = [n for r in self.runs for n in r.record.metric_goals if n in names]
        chosen = defined or held_out or list(names)
        if chosen:
            return chosen[0]
        return "loss" if any(r.record.batch_losses for r in self.runs) else None

    def measures_accuracy(self) -> bool:
        """Some compared run measured a test accuracy, or none has finished an epoch yet (preset runs do; a TensorBoard
        log never does)."""
        trained = [r for r in self.runs if r.epochs_done]
        if trained:
            return any(r.has_accuracy for r in trained)
        return any(not r.from_log for r in self.runs)

    def goal(self, name: str) -> str:
        """min or max for a metric: as a compared run defines it, else as named (accuracies max, the rest min)."""
        if name not in self._goals:
            defined = (r.record.metric_goals[name] for r in self.runs if name in r.record.metric_goals)
            fallback = self.runs[0].record.goal_of(name) if self.runs else "min"
            self._goals[name] = next(defined, fallback)
        return self._goals[name]

    def metric_value(self, run: RunColumn, name: str) -> float | None:
        if name == "loss" and "loss" not in run.record.series and not len(run.metric_values(name)):
            return run.final_loss
        return run.best_metric(name, self.goal(name))

    def ranked(self) -> list[tuple[RunColumn, float]]:
        """The runs that have the ranking metric, best first."""
        name = self.ranking_metric()
        if name is None:
            return []
        valued = [(r, v) for r in self.runs if (v := self.metric_value(r, name)) is not None and math.isfinite(v)]
        return sorted(valued, key=lambda rv: rv[1], reverse=self.goal(name) == "max")

    # ---- the table ---------------------------------------------------------------------------
    def metrics(self) -> list[Metric]:
        """The figure rows of the table, in order."""
        threshold = self.threshold
        # only where a run trained on a GPU: comparisons of CPU runs keep their rows
        gpu = [Metric("Peak GPU memory", lambda r: r.peak_gpu_memory, _figure(_gib), lambda d: f"{d / 1024**3:+.2f}")]
        if all(r.peak_gpu_memory is None for r in self.runs):
            gpu = []
        ranking = []
        name = self.ranking_metric()
        if name is not None:
            goal = self.goal(name)
            ranking = [
                Metric(
                    f"Best {fmt.printable(name)} ({'lower' if goal == 'min' else 'higher'} is better)",
                    lambda r: self.metric_value(r, name),
                    _figure(fmt.metric),
                    lambda d: f"{d:+.4g}",
                )
            ]
        accuracy = [
            Metric("Final test acc", lambda r: r.final_accuracy, _figure(fmt.accuracy), lambda d: f"{d:+.2f}"),
            Metric("Best test acc", lambda r: r.best_accuracy, _figure(fmt.accuracy), lambda d: f"{d:+.2f}"),
            Metric("Best at epoch", lambda r: r.best_epoch, _figure(str)),
        ]
        if any(r.record.best_epoch_chosen_on == "validation" for r in self.runs):  # say which set chose it
            accuracy.append(Metric("Best chosen on", lambda r: r.record.best_epoch_chosen_on or "–"))
        reaching = [
            Metric(
                f"First epoch ≥ {threshold:g}%",
                lambda r: r.epoch_reaching(threshold),
                lambda v: "never" if v is None else str(v),
                lambda d: f"{d:+d}",
            )
        ]
        if not self.measures_accuracy():  # no classifier among them: no accuracy rows
            accuracy = reaching = []
        return [
            *ranking,
            *accuracy,
            # a diverged run's last loss is NaN or infinite: shown as such, it is what happened
            Metric("Final train loss", lambda r: r.final_loss, fmt.loss, lambda d: f"{d:+.4f}"),
            *reaching,
            *(_extra_metric(name) for name in self.extra_metrics()),
            Metric("Epochs", lambda r: r.epochs_text),  # done/planned
            Metric("Training time", lambda r: r.time_s, _figure(fmt.duration), _signed_duration),
            Metric("Device", lambda r: r.device),
            *gpu,
            Metric("Status", lambda r: r.status),
        ]

    def header(self) -> list[str]:
        return ["", *(f"{r.label} (baseline)" if r.index == self.baseline else r.label for r in self.runs)]

    def table_rows(self) -> list[list[str]]:
        rows = self.annotation_rows()
        rows += [[name, *(param_text(r.param(name)) for r in self.runs)] for name in self.shown_params()]
        base = self.baseline_run
        rows += [[m.name, *(m.cell(r, base) for r in self.runs)] for m in self.metrics()]
        return rows

    def annotation_rows(self) -> list[list[str]]:
        """The runs' tags and notes (a note cut to NOTE_CELL; annotated() has it whole), where any run has them."""
        rows = []
        if any(r.record.tags for r in self.runs):
            rows.append(["tags", *(" ".join(r.record.tags) or "–" for r in self.runs)])
        if any(r.record.notes for r in self.runs):
            rows.append(["note", *(fmt.cut(" ".join((r.record.notes or "–").split()), NOTE_CELL) for r in self.runs)])
        return rows

    def annotated(self) -> list[str]:
        """One line per run with tags or a note: its label, tags and whole note."""
        lines = []
        for r in self.runs:
            if r.record.tags or r.record.notes:
                tags = f" [{' '.join(r.record.tags)}]" if r.record.tags else ""
                note = f": {' '.join(r.record.notes.split())}" if r.record.notes else ""
                lines.append(f"{r.label}{tags}{note}")
        return lines

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
                row += (
                    [f"{fmt.loss(e.initial_loss)} → {fmt.loss(e.final_loss)}", fmt.accuracy(e.test_accuracy)]
                    if e
                    else ["–", "–"]
                )
            rows.append(row)
        return rows

    # ---- the sweep grid ----------------------------------------------------------------------
    def grid(self) -> Grid | None:
        """Best accuracy over two hyperparameters, when the runs differ in exactly two."""
        repeats = self.has_repeats()
        names = [n for n in self.differing_params() if not (repeats and n == "seed")]  # seeds are repeats, not a sweep
        if len(names) != 2 or len(self.runs) < 3:
            return None
        row_param, col_param = names
        rows = _sorted_values([r.param(row_param) for r in self.runs])
        cols = _sorted_values([r.param(col_param) for r in self.runs])
        combos = {(r.param(row_param), r.param(col_param)) for r in self.runs}
        if len(rows) < 2 or len(cols) < 2 or len(combos) < 0.75 * len(rows) * len(cols):
            return None  # not a sweep: a grid of mostly empty cells says nothing
        cells: dict[tuple[Any, Any], float | None] = {}
        if repeats:  # each cell the mean over its seeds
            for g in groups.seed_groups(self.groups()):
                s = g.spread(lambda r: r.best_accuracy)
                key = (g.runs[0].param(row_param), g.runs[0].param(col_param))
                if groups.poolable(g.runs[0]):
                    cells[key] = None if s is None else s.mean
                else:  # a run that failed or diverged fills only a cell that no completed run does
                    cells.setdefault(key, None if s is None else s.mean)
            return Grid(row_param, col_param, rows, cols, cells, mean_over_seeds=True)
        for r in self.runs:
            key = (r.param(row_param), r.param(col_param))
            best = r.best_accuracy
            kept = cells.get(key)
            if best is not None and (kept is None or best > kept):
                cells[key] = best
            else:
                cells.setdefault(key, None)
        return Grid(row_param, col_param, rows, cols, cells)

    # ---- repeats across seeds -----------------------------------------------------------------
    def groups(self) -> list[groups.RunGroup]:
        """The runs grouped by everything but the seed (tuitrain.compare.groups)."""
        return groups.group_by_seed(self.runs)

    def has_repeats(self) -> bool:
        return groups.has_repeats(self.groups())

    # ---- what is said and written about it ------------------------------------------------
    def observations(self) -> list[str]:
        """Claims the numbers support, each with its numbers (tuitrain.compare.observations)."""
        return observations.observations(self)

    def render(self, form: str = "text") -> str:
        """The comparison as text, markdown, csv or json (tuitrain.compare.exports)."""
        return exports.render(self, form)
