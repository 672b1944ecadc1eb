"""The compared runs' curves: smoothed training loss, test accuracy and learning rate, x in epochs."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import numpy as np

from tuitrain.curves import ema_alpha, smooth
from tuitrain.monitor import downsample
from tuitrain.records import RunRecord


def loss_curve(record: RunRecord, points: int = 80) -> tuple[list[float], list[float]]:
    """Batch loss smoothed as the run screen smooths it, then downsampled per column to about `points` points
    (monitor.downsample: each column's lowest and highest, the first and the last point).

    Non-finite losses (a diverged run's last batches) are left out.
    """
    per_epoch = record.batches_per_epoch or record.spec.batches_per_epoch()
    smoothed = np.asarray(smooth(record.batch_losses, ema_alpha(per_epoch)), dtype=float)
    finite = np.isfinite(smoothed)
    if not finite.any():
        return [], []
    return downsample(_loss_epochs(record, len(smoothed), per_epoch)[finite], smoothed[finite], points)


def _loss_epochs(record: RunRecord, n: int, per_epoch: int) -> np.ndarray:
    """Where each of the run's `n` loss points lies, in epochs. A preset run logs every step: point i ends step i.
    A script run may log every few steps and its epochs differ in length: each closed epoch spans the points logged
    by its close (EpochRecord.steps), the points after the last close at that epoch's pace."""
    index = np.arange(n, dtype=float)
    closes = [e.steps for e in record.epochs if e.steps is not None] if record.script is not None else []
    bounds = np.asarray([0, *closes], dtype=float)
    if len(bounds) < 2 or np.any(np.diff(bounds) <= 0):
        return (index + 1) / per_epoch
    closed = len(bounds) - 1
    within = np.interp(index + 1, bounds, np.arange(closed + 1, dtype=float))
    after = closed + (index + 1 - bounds[-1]) / (bounds[-1] - bounds[-2])  # the epoch in progress
    return np.where(index + 1 <= bounds[-1], within, after)


def accuracy_curve(record: RunRecord) -> tuple[list[float], list[float]]:
    measured = [(float(e.epoch), e.test_accuracy) for e in record.epochs if e.test_accuracy is not None]
    return [x for x, _ in measured], [y for _, y in measured]


def lr_curve(record: RunRecord) -> tuple[list[float], list[float]]:
    """The learning rate each epoch trained with (warm-up and schedule), where the record has it."""
    known = [(float(e.epoch), e.lr) for e in record.epochs if e.lr is not None]
    return [x for x, _ in known], [y for _, y in known]


def has_lr_schedule(record: RunRecord) -> bool:
    """Whether the run's learning rate changed over its epochs: worth a chart."""
    return len({e.lr for e in record.epochs if e.lr is not None}) > 1


def group_curve(
    records: Sequence[RunRecord], curve: Callable[[RunRecord], tuple[list[float], list[float]]]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """x, mean, min and max of the runs' curves, each read (linearly interpolated) at the x of the longest.

    A run cut short has no value past its last point: it is left out there rather than extended.
    """
    curves = [c for c in (curve(r) for r in records) if c[0]]
    if not curves:
        return [], [], [], []
    xs = max((c[0] for c in curves), key=len)
    means, lows, highs = [], [], []
    for x in xs:
        values = [v for cx, cy in curves if (v := _interpolate(cx, cy, x)) is not None]
        means.append(sum(values) / len(values) if values else math.nan)
        lows.append(min(values, default=math.nan))
        highs.append(max(values, default=math.nan))
    return list(xs), means, lows, highs


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x or i == 0:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
