"""Run controls: set by a front end (keys, signals), read by the training loop at batch boundaries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RunControl:
    """Thread-safe controls, set by a front end and read by the loop at batch boundaries."""

    stop_run: threading.Event = field(default_factory=threading.Event)
    """Stop the current run (saved as interrupted); a sweep then goes on to the next run."""
    stop_all: threading.Event = field(default_factory=threading.Event)
    """Stop the current run and start no more."""
    paused: threading.Event = field(default_factory=threading.Event)
    """While set, the loop waits at the next batch boundary."""

    def should_stop(self) -> bool:
        return self.stop_run.is_set() or self.stop_all.is_set()

    def wait_while_paused(self, heartbeat: Callable[[], None] | None = None, every_s: float = 30.0) -> float:
        """Block while paused (unless stopped); return the seconds spent waiting.

        `heartbeat()` is called every `every_s` seconds meanwhile, so a long pause is not taken for a crash.
        """
        if not self.paused.is_set():
            return 0.0
        start = last = time.perf_counter()
        while self.paused.is_set() and not self.should_stop():
            time.sleep(0.05)
            if heartbeat is not None and time.perf_counter() - last >= every_s:
                heartbeat()
                last = time.perf_counter()
        return time.perf_counter() - start
