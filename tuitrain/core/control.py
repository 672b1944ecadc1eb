"""Run controls: set by a front end (keys, signals), read by the training loop at batch boundaries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    _holding: int = field(default=0, init=False, repr=False, compare=False)
    _held_exit: BaseException | None = field(default=None, init=False, repr=False, compare=False)

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

    @contextmanager
    def uninterrupted(self) -> Iterator[None]:
        """A block that a second stop signal must not cut short: the run file's last write.

        While one is open on the main thread, a front end's signal handler hands the exception it would
        raise to `defer_exit`; the block runs to its end and the exception is raised as it closes. On
        another thread (where no signal handler raises) this is a plain block.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding and self._held_exit is not None:
                exc, self._held_exit = self._held_exit, None
                raise exc

    def defer_exit(self, exc: BaseException) -> bool:
        """Keep `exc` to be raised when the open `uninterrupted` block ends; False (nothing kept) when none is open.

        Called by a signal handler, which runs on the main thread: the same thread as the blocks it defers to."""
        if not self._holding:
            return False
        if self._held_exit is None:
            self._held_exit = exc
        return True
