"""The headless front end: engine events as log lines, PyTorch-example style."""

from __future__ import annotations

import sys
from typing import TextIO

from tuitrain import format as fmt
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
    RunWaiting,
)


def safe_print(text: str, out: TextIO) -> bool:
    """Print and flush; False if the output is gone (closed pipe, hung-up terminal) instead of raising."""
    try:
        print(text, file=out, flush=True)
        return True
    except (
        OSError,
        ValueError,
        RuntimeError,
    ):  # BrokenPipeError, EIO after SIGHUP, a closed file, re-entry from a signal handler
        return False


class HeadlessPrinter:
    """A sink that prints progress lines (no control characters: safe for logs and pipes)."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.broken = False
        """The output went away (e.g. `| head`, a dropped SSH session): training goes on silently."""

    def _print(self, text: str) -> None:
        if not self.broken:  # a log message may quote a label from a hand-made run file
            self.broken = not safe_print(fmt.printable(text, keep="\n\t"), self.out)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogMessage):
            self._print(event.text)
        elif isinstance(event, RunWaiting):
            self._print(f"Run {event.run_index + 1}/{event.run_count}: {fmt.printable(event.label)} {event.reason}")
        elif isinstance(event, RunStarted):
            self._print(
                f"\n=== Run {event.run_index + 1}/{event.run_count}: {fmt.printable(event.label)} — "
                f"{fmt.spec_summary(event.spec, event.config)}, "
                f"{event.spec.epochs} epochs, {event.train_size} train / {event.test_size} test on {event.device}"
            )
            if event.path:
                self._print(f"Saving to {event.path}")
        elif isinstance(event, BatchLosses):
            self._print(
                fmt.train_line(event.epoch, event.samples_done, event.train_size, event.losses[-1])
                + f"\t{event.samples_per_s:,.0f} samples/s"
            )
        elif isinstance(event, EpochEnded):
            test = (
                fmt.test_line(event.test_loss, event.test_correct, event.test_total)
                if event.test_total
                else f"Test set: Average loss: {event.test_loss:.4f}, Accuracy: {event.test_accuracy:.2f}%"
            )  # a script run need not say how many test images
            extra = "".join(f"  {fmt.printable(k)}={fmt.metric(v)}" for k, v in event.metrics.items())
            self._print(test + extra + f"  [epoch {event.epoch}/{event.epochs} in {fmt.duration(event.duration_s)}]")
        elif isinstance(event, RunFinished):
            line = f"Run {fmt.printable(event.label)}: {event.status}"
            if event.best_accuracy is not None:
                line += f", best test accuracy {event.best_accuracy:.2f}%"
            if event.error:
                line += f" — {event.error}"
            self._print(line)
