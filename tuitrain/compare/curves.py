"""The compared runs' curves: smoothed training loss and test accuracy, x in epochs."""

from __future__ import annotations

import math

from tuitrain.curves import ema_alpha, smooth
from tuitrain.records import RunRecord


def loss_curve(record: RunRecord, points: int = 80) -> tuple[list[float], list[float]]:
    """Batch loss smoothed as the run screen smooths it, then downsampled to about `points` bucket means.

    Non-finite losses (a diverged run's last batches) are left out.
    """
    per_epoch = record.batches_per_epoch or record.spec.batches_per_epoch()
    smoothed = smooth(record.batch_losses, ema_alpha(per_epoch))
    values = [(i, v) for i, v in enumerate(smoothed) if math.isfinite(v)]
    if not values:
        return [], []
    size = max(1, math.ceil(len(values) / max(points, 1)))
    xs, ys = [], []
    for start in range(0, len(values), size):
        bucket = values[start : start + size]
        xs.append((bucket[-1][0] + 1) / per_epoch)
        ys.append(sum(v for _, v in bucket) / len(bucket))
    return xs, ys


def accuracy_curve(record: RunRecord) -> tuple[list[float], list[float]]:
    return [float(e.epoch) for e in record.epochs], [e.test_accuracy for e in record.epochs]
