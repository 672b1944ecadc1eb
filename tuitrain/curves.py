"""Loss smoothing shared by the run screen (tuitrain.monitor) and the comparison (tuitrain.compare).

One exponential moving average, so a run's smoothed loss looks the same while it trains and when it
is compared afterwards. Pure Python: no numpy, torch or textual.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def ema_alpha(batches_per_epoch: int) -> float:
    """Weight of each new batch loss in the smoothed line: a window of about 1/20 of an epoch."""
    return min(0.3, max(0.02, 20.0 / max(batches_per_epoch, 1)))


def smooth(values: Iterable[float], alpha: float, last: float | None = None) -> list[float]:
    """The EMA of `values`, continuing from `last` (the smoothed value before them, if any).

    A non-finite loss (a diverged run) is passed through as it is rather than smeared into the
    line, and the average starts afresh at the next finite loss.
    """
    ema = last
    out = []
    for value in values:
        if not math.isfinite(value):
            ema = value
        else:
            ema = value if ema is None or not math.isfinite(ema) else ema + alpha * (value - ema)
        out.append(ema)
    return out
