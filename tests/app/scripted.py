"""A scripted EventSource for app tests and snapshots: a fixed list of engine events, no clocks.

Every figure the run screen shows (losses, accuracies, samples/s, elapsed, ETA, device) comes from
the events, so a screen fed by it looks the same on every machine and every time.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from pathlib import Path

from tuitrain.core.control import RunControl
from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    Event,
    LogMessage,
    RunFinished,
    RunStarted,
    RunWaiting,
    Sink,
)
from tuitrain.core.spec import RunSpec

INVOCATION = "20250102-100000-demo-a1b2c3"
DEVICE = "CPU (2 threads)"
BATCHES = 20
TRAIN_SIZE = 640
TEST_SIZE = 200


def loss_at(step: int, scale: float) -> float:
    """A smooth, made-up loss curve: fixed numbers, no randomness."""
    return 0.05 + 2.25 * scale * math.exp(-step / 12) + 0.02 * math.sin(step)


CONFUSED = ((4, 9), (9, 4), (7, 2), (5, 3), (8, 3), (3, 5), (2, 7), (8, 5), (6, 0), (1, 7))
"""Where the scripted matrices put their errors, most often first: the pairs of digits a real MNIST run mixes up."""


def scripted_confusion(correct: int, classes: int = 10) -> tuple[tuple[int, ...], ...]:
    """A test confusion matrix of TEST_SIZE images, TEST_SIZE / classes per class, with `correct` on its diagonal:
    the errors go to CONFUSED's cells, the first ones getting the most."""
    per_class = TEST_SIZE // classes
    matrix = [[per_class if t == p else 0 for p in range(classes)] for t in range(classes)]
    wrong = TEST_SIZE - correct
    for i in range(wrong):
        t, p = CONFUSED[min(int(len(CONFUSED) * (i / wrong) ** 2), len(CONFUSED) - 1)]
        if matrix[t][t] > 0:
            matrix[t][t] -= 1
            matrix[t][p] += 1
    return tuple(tuple(row) for row in matrix)


def run_events(
    index: int,
    count: int,
    label: str,
    accuracies: list[float],
    *,
    epochs: int,
    batches_done: int,
    finished: bool,
    scale: float,
    invocation: str = INVOCATION,
) -> list[Event]:
    run_id = f"{invocation}-{index + 1:02d}"
    spec = RunSpec(model="model_a", epochs=epochs, batch_size=32, lr=0.003, subset=TRAIN_SIZE, device="cpu")
    events: list[Event] = [
        RunStarted(
            run_id=run_id,
            label=label,
            run_index=index,
            run_count=count,
            spec=spec,
            device=DEVICE,
            train_size=TRAIN_SIZE,
            test_size=TEST_SIZE,
            batches_per_epoch=BATCHES,
            start_epoch=1,
        )
    ]
    step = 0
    for epoch in range(1, len(accuracies) + 2):
        last_batch = BATCHES if epoch <= len(accuracies) else batches_done
        losses = [loss_at(s, scale) for s in range(step, step + last_batch)]
        for start in range(0, last_batch, 5):
            chunk = tuple(losses[start : start + 5])
            batch = start + len(chunk)
            events.append(
                BatchLosses(
                    run_id=run_id,
                    epoch=epoch,
                    first_step=step + start,
                    losses=chunk,
                    batch=batch,
                    batches_per_epoch=BATCHES,
                    samples_done=batch * 32,
                    train_size=TRAIN_SIZE,
                    samples_per_s=1600.0,
                    elapsed_s=((epoch - 1) * BATCHES + batch) * 0.5,
                )
            )
        if epoch > len(accuracies):
            break
        accuracy = accuracies[epoch - 1]
        events.append(
            EpochEnded(
                run_id=run_id,
                label=label,
                run_index=index,
                epoch=epoch,
                initial_loss=losses[0],
                final_loss=losses[-1],
                mean_loss=sum(losses) / len(losses),
                test_loss=losses[-1],
                test_accuracy=accuracy,
                test_correct=round(accuracy * TEST_SIZE / 100),
                test_total=TEST_SIZE,
                duration_s=10.0,
                samples_per_s=1600.0,
                epochs=epochs,
                confusion=scripted_confusion(round(accuracy * TEST_SIZE / 100)),
            )
        )
        step += BATCHES
    if finished:
        events.append(
            RunFinished(run_id=run_id, label=label, run_index=index, status="completed", best_accuracy=max(accuracies))
        )
    return events


def two_runs_mid_training() -> list[Event]:
    """Run 1 of 2 completed (3 epochs), run 2 after one epoch and half of the next."""
    return [
        LogMessage("Data: synthetic"),
        *run_events(0, 2, "activation=relu", [91.5, 95.0, 96.5], epochs=3, batches_done=0, finished=True, scale=1.0),
        *run_events(1, 2, "activation=tanh", [89.0], epochs=3, batches_done=10, finished=False, scale=1.2),
    ]


def interleaved(*runs: list[Event]) -> list[Event]:
    """The events of runs trained at once: one event of each run in turn, as worker processes deliver them."""
    events: list[Event] = []
    for i in range(max(map(len, runs))):
        events += [run[i] for run in runs if i < len(run)]
    return events


def waiting(index: int, count: int, label: str, invocation: str = INVOCATION) -> RunWaiting:
    return RunWaiting(
        run_id=f"{invocation}-{index + 1:02d}",
        label=label,
        run_index=index,
        run_count=count,
        reason="waiting for a free core",
    )


def two_runs_at_once(count: int = 2) -> list[Event]:
    """Runs 1 and 2 of `count` training at once (run 1 an epoch ahead); a third one waiting for a free core."""
    return [
        LogMessage("Data: synthetic"),
        *([waiting(2, count, "activation=sigmoid")] if count > 2 else []),
        *interleaved(
            run_events(0, count, "activation=relu", [91.5], epochs=3, batches_done=15, finished=False, scale=1.0),
            run_events(1, count, "activation=tanh", [], epochs=3, batches_done=10, finished=False, scale=1.2),
        ),
    ]


class ScriptedSource:
    """Delivers its events, then (`in_progress`) waits as training would until stopped, or ends.

    `parallel`: each run has its own RunControl (control_for), as when runs train at once in worker processes;
    else every run's is the source's, as when they train one at a time."""

    title = "demo — Two scripted runs (2 runs)"
    remote = None  # trained "here": no other process's trainer to ask

    def __init__(
        self,
        events: list[Event],
        *,
        in_progress: bool = True,
        folder: Path | None = None,
        parallel: bool = False,
        title: str | None = None,
    ) -> None:
        self.events = events
        self.title = title or self.title
        self.in_progress = in_progress
        self.folder = folder
        self.control: RunControl | None = RunControl()
        self.parallel = parallel
        self.run_controls: dict[str, RunControl] = {}
        """With `parallel`: the controls of each run that started, by run id."""
        self.delivered = threading.Event()
        self.later: queue.Queue[list[Event]] = queue.Queue()

    def run(self, sink: Sink) -> None:
        self.deliver(self.events, sink)
        self.delivered.set()
        deadline = time.monotonic() + 30  # a test that forgets to stop its source still ends
        while self.in_progress and not self.control.stop_all.is_set() and time.monotonic() < deadline:
            try:
                self.deliver(self.later.get(timeout=0.05), sink)
            except queue.Empty:
                continue

    def deliver(self, events: list[Event], sink: Sink) -> None:
        for event in events:
            if self.parallel and isinstance(event, RunStarted):
                self.run_controls[event.run_id] = RunControl()
            if self.parallel and isinstance(event, RunFinished):
                self.run_controls.pop(event.run_id, None)
            sink(event)

    def send(self, events: list[Event]) -> None:
        """More events, delivered after the first ones while in progress (a run ending, say)."""
        self.later.put(events)

    def stop(self) -> None:
        self.control.stop_all.set()

    def control_for(self, run_id: str) -> RunControl | None:
        return self.run_controls.get(run_id) if self.parallel else self.control

    def result_folder(self) -> Path | None:
        return self.folder
