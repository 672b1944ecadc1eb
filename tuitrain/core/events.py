"""Events the engine emits while training, the sinks that take them and the sources that deliver them.

Events are small immutable dataclasses: safe to hand to another thread.

A sink is any callable taking an event. It is called on the training thread, so it must be quick
(a UI sink only posts a message; a file writer throttles its writes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tuitrain.core.spec import RunSpec

if TYPE_CHECKING:
    from tuitrain.core.control import RunControl
    from tuitrain.remote_control import RemoteControls


@dataclass(frozen=True)
class LogMessage:
    """A line of information for the user (data source, device, files written)."""

    text: str


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    label: str
    run_index: int
    """0-based position of this run in its preset invocation."""
    run_count: int
    spec: RunSpec
    device: str
    """Human-readable device: GPU name, or 'CPU (N threads)'."""
    train_size: int
    test_size: int
    batches_per_epoch: int
    start_epoch: int
    """1 for a fresh run; later when a run resumes."""
    path: Path | None = None
    """The run file, when one is being written."""
    config: dict[str, Any] | None = None
    """A script run's free-form settings (records.RunRecord.config); its spec then holds only defaults."""
    host: str | None = None
    """The machine that trains it (None: not known, as for a run watched from its file)."""
    gpu: int | None = None
    """The CUDA device index it trains on, as its training process numbers them; None on the CPU or not known."""
    epochs_known: bool = True
    """Whether spec.epochs is planned; False for a script run that did not say (it trains until it finishes)."""
    has_epochs: bool = True
    """False for a TensorBoard log: its steps are in no epoch (its BatchLosses are all 'epoch 1', their batch the
    steps so far)."""
    loss_series: str | None = None
    """The name the run logged its training loss under (records.RunRecord.loss_series: 'train/loss'), where it
    says; its BatchLosses carry that series."""


@dataclass(frozen=True)
class RunWaiting:
    """A run that is planned but cannot start yet: no free core, GPU or worker (it starts when one frees)."""

    run_id: str
    label: str
    run_index: int
    run_count: int
    reason: str
    """What it waits for, in words: 'waiting for a free core', 'waiting for a worker'."""


@dataclass(frozen=True)
class BatchLosses:
    """Losses of consecutive training batches, read back from the device in one go."""

    run_id: str
    epoch: int
    first_step: int
    """Global step (0-based, counted over the whole run) of losses[0]."""
    losses: tuple[float, ...]
    batch: int
    """Batches done in this epoch after the last of these losses."""
    batches_per_epoch: int
    samples_done: int
    """Training samples seen in this epoch so far."""
    train_size: int
    samples_per_s: float
    """Training throughput of this epoch so far: samples per second, or training steps per second where
    batch_size_known is False."""
    elapsed_s: float
    """Seconds of training and evaluation of this run in this process so far: the finished epochs' duration_s
    plus this epoch's training time (pauses and start-up excluded)."""
    batch_size_known: bool = True
    """Whether the run's batch size is known; False for a script run that did not say it (yet: a framework's logger
    may learn it once training began) or a TensorBoard log."""
    threads: int = 0
    """CPU threads the run trains with now (its share of the cores can change mid-run); 0 on a GPU or unknown."""
    steps: tuple[int, ...] | None = None
    """Each loss's step as the run logged it, where the losses are not one per step from first_step (a script or
    framework that logs every n steps, a TensorBoard log); None: first_step, first_step + 1, … (the engine's)."""


@dataclass(frozen=True)
class EpochEnded:
    run_id: str
    label: str
    run_index: int
    epoch: int
    initial_loss: float
    final_loss: float
    mean_loss: float
    test_loss: float
    test_accuracy: float | None
    """None for a run that measures no accuracy (its figures are in metrics)."""
    test_correct: int
    test_total: int
    duration_s: float
    """Training plus evaluation time of the epoch, pauses excluded (records.EpochRecord.duration_s)."""
    samples_per_s: float
    epochs: int
    """Total epochs planned for this run; 0: not known (a script run that did not say, while it trains)."""
    paused_s: float = 0.0
    """Seconds training was paused during the epoch."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Further scalars a script logged for the epoch (records.EpochRecord.metrics)."""
    lr: float | None = None
    """Learning rate the epoch trained with; None where unknown (records.EpochRecord.lr)."""
    train_accuracy: float | None = None
    """Accuracy on the epoch's training batches as trained; None where not counted."""
    val_loss: float | None = None
    """Validation loss; None without a validation split."""
    val_accuracy: float | None = None
    """Validation accuracy in percent; None without a validation split."""
    confusion: tuple[tuple[int, ...], ...] | None = None
    """The test confusion matrix, confusion[true][predicted] (records.EpochRecord.confusion); None for script runs."""


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    label: str
    run_index: int
    status: str
    """completed, interrupted, diverged or failed; a watcher (tuitrain.follow) also reports crashed."""
    path: Path | None = None
    error: str | None = None
    best_accuracy: float | None = None
    """Test accuracy of the best epoch."""
    best_on_validation: bool = False
    """The best epoch was chosen on a held-out validation split (else on the test accuracy itself)."""


@dataclass(frozen=True)
class MetricPoints:
    """New points of a named per-step series other than the training loss (`run.log({"lr": ...})`), read from the
    series log."""

    run_id: str
    name: str
    steps: tuple[int, ...]
    values: tuple[float, ...]


Event = LogMessage | RunWaiting | RunStarted | BatchLosses | EpochEnded | RunFinished | MetricPoints
Sink = Callable[[Event], None]


def fan_out(*sinks: Sink | None) -> Sink:
    """One sink that calls each of the given ones in order."""
    active = [s for s in sinks if s is not None]

    def sink(event: Event) -> None:
        for s in active:
            s(event)

    return sink


class EventSource(Protocol):
    """Where a run screen's events come from: a preset trained in this process (session.PresetSource, with
    a RunControl) or another process's run files (follow.Follower, with none: the pause/stop keys hide)."""

    title: str
    control: RunControl | None
    remote: RemoteControls | None
    """Another process's runs that this one watches: requests to their trainer (pause, stop) and the state it
    reports; None for a preset trained here, and for runs whose trainer takes no requests."""

    def run(self, sink: Sink) -> None:
        """Deliver events to `sink` until there are no more; called on a worker thread."""

    def stop(self) -> None:
        """Ask run() to return soon (thread-safe)."""

    def control_for(self, run_id: str) -> RunControl | None:
        """The controls of one running run (pause, stop it): with parallel runs each has its own; None when
        nothing here controls it (a watched run, or one that has ended)."""

    def result_folder(self) -> Path | None:
        """Where the run files are, once known."""
