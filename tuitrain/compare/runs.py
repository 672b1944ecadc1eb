"""One compared run and the figures the comparison reads from its record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuitrain import format as fmt
from tuitrain.catalog import RunFile
from tuitrain.core.confusion import class_names
from tuitrain.records import RunRecord
from tuitrain.tblogs import PRESET as TENSORBOARD

NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "kmnist": 10}
EPOCH_FIGURES = ("test_accuracy", "test_loss", "mean_loss", "val_accuracy", "val_loss", "train_accuracy", "lr")
"""Figures of every epoch record that --metric can rank by, besides what a script logged."""


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
        """The file's status, but 'diverged' for a run that logged a non-finite loss and says 'completed' (a script
        run written before scripts marked it so): its figures came after the loss stopped being a number."""
        if self.file.status == "completed" and self.first_non_finite is not None:
            return "diverged"
        return self.file.status

    @property
    def first_non_finite(self) -> int | None:
        """Index of the first NaN or infinite batch loss, or None where every one is finite."""
        return next((i for i, v in enumerate(self.record.batch_losses) if not math.isfinite(v)), None)

    @property
    def epochs_done(self) -> int:
        return len(self.record.epochs)

    @property
    def from_log(self) -> bool:
        """A TensorBoard log: steps and values, no epochs (its record's spec is a stand-in)."""
        return self.record.preset == TENSORBOARD

    @property
    def epochs_text(self) -> str:
        """Epochs done/planned; '–' for a TensorBoard log."""
        if self.from_log:
            return "–"
        return f"{self.epochs_done}/{self.record.spec.epochs}"

    @property
    def final_accuracy(self) -> float | None:
        return self.record.final_accuracy

    @property
    def best_accuracy(self) -> float | None:
        return self.record.best_accuracy

    @property
    def has_accuracy(self) -> bool:
        """Every completed epoch measured a test accuracy (a classifier's run; a regression's has none)."""
        return bool(self.record.epochs) and all(e.test_accuracy is not None for e in self.record.epochs)

    def accuracy(self, epoch: int) -> float:
        """The test accuracy of a completed epoch (1-based) of a run that has_accuracy."""
        value = self.record.epochs[epoch - 1].test_accuracy
        assert value is not None, "accuracy() of a run without accuracy"
        return value

    @property
    def best_epoch(self) -> int | None:
        """The best epoch (records.RunRecord.best_epoch: on validation where the run held out a split, else on
        test), first of equal bests."""
        best = self.record.best_epoch
        return best.epoch if best is not None else None

    @property
    def final_loss(self) -> float | None:
        """The last training batch loss (of the last completed epoch, or later if the run was cut short)."""
        if self.record.batch_losses:
            return self.record.batch_losses[-1]
        if self.record.series_file is not None and self.record.loss_series is None:
            return None  # a script that logged no training loss
        return self.record.epochs[-1].final_loss if self.record.epochs else None

    def epoch_reaching(self, threshold: float) -> int | None:
        return next((e.epoch for e in self.record.epochs if (e.test_accuracy or 0.0) >= threshold), None)

    @property
    def epochs_before_divergence(self) -> int:
        """Epochs whose every batch loss was finite: those completed before the first non-finite loss.

        A run that continues after a non-finite loss (on_divergence = "continue") records later epochs
        too; they are not 'before' it.
        """
        first_bad = self.first_non_finite
        if first_bad is None:
            return self.epochs_done
        per_epoch = self.record.batches_per_epoch or self.record.spec.batches_per_epoch()
        return min(first_bad // max(per_epoch, 1), self.epochs_done)

    @property
    def time_s(self) -> float | None:
        """Training and evaluation time: the sum of the completed epochs' durations.

        Never the span from start to end, which also counts pauses, start-up and the downtime between
        a crash and its resume.
        """
        return self.record.training_s if self.record.epochs else None

    @property
    def device(self) -> str:
        return self.record.env.device

    @property
    def peak_gpu_memory(self) -> int | None:
        """The highest per-epoch peak of GPU memory allocated by training; None for a CPU run or an older file."""
        peaks = [e.peak_gpu_memory_bytes for e in self.record.epochs if e.peak_gpu_memory_bytes is not None]
        return max(peaks) if peaks else None

    @property
    def test_total(self) -> int:
        return self.record.epochs[-1].test_total if self.record.epochs else 0

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES.get(self.record.spec.dataset, 10)

    @property
    def final_confusion(self) -> list[list[int]] | None:
        """The test confusion matrix of the last completed epoch; None for a run without one (script runs, older
        files) or that has no epoch."""
        return self.record.epochs[-1].confusion if self.record.epochs else None

    @property
    def class_names(self) -> list[str]:
        """The names of the classes its confusion matrix counts (digits for MNIST)."""
        return class_names(self.record.spec.dataset, len(self.final_confusion or ()) or self.num_classes)

    def param(self, name: str) -> Any:
        """A hyperparameter: a script run's from its free-form config (its spec holds only defaults), a preset
        run's from its spec; None where the run has no such setting."""
        if self.record.config is not None:
            return self.record.config.get(name)
        return getattr(self.record.spec, name, None)

    def metric_values(self, name: str) -> np.ndarray:
        """A metric's finite values in order: per epoch where the run logged it per epoch, else its per-step series,
        else its summary figure; empty where the run has none."""
        values = np.asarray([e.metrics[name] for e in self.record.epochs if name in e.metrics], dtype=float)
        if not len(values) and name in EPOCH_FIGURES:  # a preset run's own per-epoch figures
            figures = [getattr(e, name) for e in self.record.epochs]
            values = np.asarray([v for v in figures if v is not None], dtype=float)
        if not len(values) and name in self.record.series:
            values = self.record.series[name].values
        if not len(values) and isinstance(self.record.summary.get(name), (int, float)):
            values = np.asarray([self.record.summary[name]], dtype=float)
        return values[np.isfinite(values)]

    def best_metric(self, name: str, goal: str) -> float | None:
        """The best value of a metric over the run (the lowest for goal "min", the highest for "max")."""
        values = self.metric_values(name)
        if not len(values):
            return None
        return float(values.min() if goal == "min" else values.max())

    def final_metric(self, name: str) -> float | None:
        """An extra metric a script logged, as of its last epoch that has it."""
        return next((e.metrics[name] for e in reversed(self.record.epochs) if name in e.metrics), None)


def param_text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def unique_labels(records: Sequence[RunRecord]) -> list[str]:
    """Labels as given (control characters escaped: run files may be hand-made), with the preset name (then a
    counter) added where two runs share one."""
    given = [fmt.printable(r.label or r.id) for r in records]
    labels = [
        f"{g} ({fmt.printable(r.preset)})" if given.count(g) > 1 and r.preset else g for g, r in zip(given, records)
    ]
    counts: dict[str, int] = {}
    result = []
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
        result.append(label if labels.count(label) == 1 else f"{label} #{counts[label]}")
    return result


def epochs_text(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def finite(value: float | None) -> float | None:
    """The value, or None where it is not a finite number (NaN or infinity have no place in a figure)."""
    return value if value is None or math.isfinite(value) else None
