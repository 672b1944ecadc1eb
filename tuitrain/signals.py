"""Stopping training cleanly on Ctrl-C, SIGTERM and SIGHUP (a dropped SSH session), for both front ends.

The first signal sets `control.stop_all`: the loop stops at the next batch boundary and saves the
current run as `interrupted`. A second signal raises `SignalExit` (a KeyboardInterrupt) in the main
thread to exit at once; the loop still marks the run interrupted on the way out, and files are only
ever replaced atomically, so what is on disk stays valid. A second signal that arrives during that
last write (`RunControl.uninterrupted`) is raised once the write is done. Never imports textual.
"""

from __future__ import annotations

import select
import signal
from collections.abc import Callable, Sequence
from types import FrameType

from tuitrain.core.control import RunControl

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)


class SignalExit(KeyboardInterrupt):
    """Raised by a second stop signal: leave now. `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)


def terminal_gone(fd: int) -> bool:
    """Whether the terminal on `fd` has hung up (its window or tmux session closed). The app then reads end-of-file
    for ever and may get no SIGHUP (when the hang-up reached only the shell that started it)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # hang-ups and errors are reported whatever is asked for
    return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0))


def exit_code_for(signum: int) -> int:
    """The shell convention: 128 + signal number (130 for Ctrl-C)."""
    return 128 + int(signum)


class StopOnSignals:
    """Install handlers that stop training via `control.stop_all`; restore the previous ones on exit.

    Use as a context manager from the main thread:

        with StopOnSignals(control, on_signal=lambda signum, first: ...) as stops:
            ...train...
        if stops.received: return stops.exit_code

    `on_signal(signum, first)` is called from the handler (main thread, between bytecodes): keep it
    short — print a line, or schedule work on an event loop with `loop.call_soon_threadsafe`. With
    `exit_on_second=False` (e.g. an app that quits its own way) repeated signals only call `on_signal`.
    """

    def __init__(
        self,
        control: RunControl | None,
        signals: Sequence[int] = STOP_SIGNALS,
        *,
        on_signal: Callable[[int, bool], object] | None = None,  # what it returns is ignored
        exit_on_second: bool = True,
    ) -> None:
        self.control = control
        self.signals = tuple(signals)
        self.on_signal = on_signal
        self.exit_on_second = exit_on_second
        self.received: int | None = None
        """The first stop signal received, or None."""
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int | None:
        return None if self.received is None else exit_code_for(self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
            if self.control is not None:  # None: the caller stops training its own way (the app)
                self.control.stop_all.set()
        if self.on_signal is not None:
            self.on_signal(signum, first)
        if not first and self.exit_on_second:
            exit_now = SignalExit(signum)
            if self.control is not None and self.control.defer_exit(exit_now):
                return  # raised when the run file's last write is done
            raise exit_now

    def install(self) -> StopOnSignals:
        if self._previous:  # installed already (before the work that it guards began): keep the first previous
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> StopOnSignals:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
