"""The headless front end: engine events as log lines, PyTorch-example style."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
from tuitrain.monitor import throughput

HEADING_SETTINGS_WIDTH = 100
"""Characters of a script run's settings in its heading line; the rest are counted (a Hugging Face run has dozens)."""


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
    """A sink that prints progress lines (no control characters: safe for logs and pipes).

    While runs train at once their lines interleave: each line about a run then starts with its label in
    brackets. That begins with the first run when `parallel()` says so (the invocation trains several runs at
    once), else as soon as a run starts while another runs (a watched invocation); one run at a time prints as it
    always did."""

    def __init__(
        self, out: TextIO = sys.stdout, *, parallel: Callable[[], bool] | None = None, watching: bool = False
    ) -> None:
        """`parallel` is asked at the first event about a run, not before: --jobs auto is planned again once the
        data is loaded (its real size), and no run starts or waits before that. `watching`: the events come from
        run files that another process writes (tuitrain watch), which this one only reads."""
        self.out = out
        self.watching = watching
        self.broken = False
        """The output went away (e.g. `| head`, a dropped SSH session): training goes on silently."""
        self.parallel = parallel
        self.tagged = False
        """Lines about a run start with its label."""
        self.labels: dict[str, str] = {}
        self.without_epochs: set[str] = set()
        """Runs whose steps are in no epoch (TensorBoard logs, RunStarted.has_epochs): their lines say the step."""
        """The label of each run that has started, by run id."""
        self.running: set[str] = set()

    def _print(self, text: str) -> None:
        if not self.broken:  # a log message may quote a label from a hand-made run file
            self.broken = not safe_print(fmt.printable(text, keep="\n\t"), self.out)

    def _first_run_event(self) -> None:
        if self.parallel is not None:
            self.tagged, self.parallel = self.tagged or self.parallel(), None

    def _print_about(self, run_id: str, text: str) -> None:
        """A line about one run: tagged with its label while runs train at once."""
        self._print(f"[{self.labels.get(run_id, run_id)}] {text}" if self.tagged else text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogMessage):
            self._print(event.text)
        elif isinstance(event, RunWaiting):
            self._first_run_event()
            self.labels[event.run_id] = fmt.printable(event.label)
            if self.tagged:
                self._print_about(event.run_id, f"Run {event.run_index + 1}/{event.run_count}: {event.reason}")
            else:  # one run at a time, waiting for a core that another tuitrain holds
                self._print(f"Run {event.run_index + 1}/{event.run_count}: {fmt.printable(event.label)} {event.reason}")
        elif isinstance(event, RunStarted):
            self._first_run_event()
            self.tagged = self.tagged or bool(self.running - {event.run_id})
            self.running.add(event.run_id)
            self.labels[event.run_id] = fmt.printable(event.label)
            # only what the run says: a script run or a TensorBoard log may not say its epochs, sizes or device
            sizes = [f"{n} {what}" for n, what in ((event.train_size, "train"), (event.test_size, "test")) if n]
            where = [f"on {event.device}"] if event.device else []
            about = [
                fmt.spec_summary(event.spec, event.config, width=HEADING_SETTINGS_WIDTH),
                f"{event.spec.epochs} epochs" if event.epochs_known else "",
                " ".join([" / ".join(sizes), *where]).strip(),
            ]
            about_text = ", ".join(part for part in about if part)
            self._print(
                f"\n=== Run {event.run_index + 1}/{event.run_count}: {fmt.printable(event.label)}"
                + (f" — {about_text}" if about_text else "")
            )
            if not event.has_epochs:
                self.without_epochs.add(event.run_id)
            if event.path:
                self._print_about(event.run_id, f"{'Reading' if self.watching else 'Saving to'} {event.path}")
        elif isinstance(event, BatchLosses):
            if event.run_id in self.without_epochs:
                line = f"Step {event.batch:,}\tLoss: {event.losses[-1]:.6f}"
            else:
                line = fmt.train_line(event.epoch, event.samples_done, event.train_size, event.losses[-1])
            self._print_about(event.run_id, f"{line}\t{throughput(event.samples_per_s, event.batch_size_known)}")
        elif isinstance(event, EpochEnded):
            if event.test_accuracy is None:  # a regression or language model: only its own figures
                test = f"Epoch {event.epoch}: mean training loss {fmt.loss(event.mean_loss)}"
            elif event.test_total:
                test = fmt.test_line(event.test_loss, event.test_correct, event.test_total)
            else:  # a script run need not say how many test images
                test = f"Test set: Average loss: {event.test_loss:.4f}, Accuracy: {event.test_accuracy:.2f}%"
            of_planned = f"/{event.epochs}" if event.epochs else ""  # 0: not planned
            extra = "".join(f"  {fmt.printable(k)}={fmt.metric(v)}" for k, v in event.metrics.items())
            if event.val_accuracy is not None:
                extra += f"  validation {event.val_accuracy:.2f}%"
            if event.train_accuracy is not None:
                extra += f"  training {event.train_accuracy:.2f}%"
            if event.lr is not None:
                extra += f"  lr {event.lr:.4g}"
            self._print_about(
                event.run_id,
                test + extra + f"  [epoch {event.epoch}{of_planned} in {fmt.duration(event.duration_s)}]",
            )
        elif isinstance(event, RunFinished):
            self.running.discard(event.run_id)
            line = f"Run {event.status}" if self.tagged else f"Run {fmt.printable(event.label)}: {event.status}"
            if event.best_accuracy is not None:
                line += (
                    f", test accuracy {event.best_accuracy:.2f}% at the best validation epoch"
                    if event.best_on_validation
                    else f", best test accuracy {event.best_accuracy:.2f}%"
                )
            if event.error:
                line += f" — {event.error}"
            self._print_about(event.run_id, line)
