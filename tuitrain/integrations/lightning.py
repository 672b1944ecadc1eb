"""A Lightning logger that records the run for tuitrain: `Trainer(logger=TuitrainLogger(label="lr=1e-3"))`.

    from tuitrain.integrations.lightning import TuitrainLogger
    trainer = lightning.Trainer(logger=TuitrainLogger(runs_dir="runs", label="baseline"), max_epochs=3)

Every metric Lightning logs (self.log in the LightningModule) becomes a series at Lightning's step (one named
like 'train_loss' is the training loss); the hyperparameters (save_hyperparameters, the datamodule's) are the
run's config; an epoch ends when Lightning's 'epoch' moves on, with the epoch-level figures logged in it
(val_loss...); the planned epochs are the trainer's max_epochs unless it trains to max_steps or without end, and
the samples per step its training dataloader's batch size (times gradient accumulation and processes) where it has
one, else throughput is shown in steps per second; finalize ends the run completed, failed or interrupted
(Ctrl-C) as the trainer ended. Only rank zero records, in multi-process training. It logs through the logging
API (tuitrain.script), like any script.
"""

from __future__ import annotations

import sys
import traceback
from argparse import Namespace
from collections.abc import Callable
from typing import Any
from weakref import ref

try:
    from lightning.fabric.utilities.logger import _convert_params
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ImportError as exc:
    from tuitrain.integrations import missing

    raise missing("Lightning", "lightning", exc) from None

from tuitrain import script
from tuitrain.integrations import config_values

EPOCH_KEY = "epoch"
"""The metric Lightning adds to every logged step: the epoch in progress (0-based)."""
STEP_SUFFIX = "_step"
"""Lightning's suffix for the per-step value of a metric logged on_step and on_epoch (the other: _epoch)."""


def planned_epochs(trainer: Any) -> int | None:
    """The epochs a trainer will train: its max_epochs, unless max_steps ends it (or it trains without end)."""
    epochs = getattr(trainer, "max_epochs", None)
    max_steps = getattr(trainer, "max_steps", -1)
    if not isinstance(epochs, int) or epochs < 1 or (isinstance(max_steps, int) and max_steps >= 0):
        return None
    return epochs


def samples_per_step(trainer: Any) -> int | None:
    """Training samples in one of the trainer's steps (the step it logs at: one optimizer step): its training
    dataloader's batch size times gradient accumulation and processes; None where the dataloader has no fixed batch
    size (a batch sampler, several dataloaders, an iterable of ready batches)."""
    try:
        loader = trainer.train_dataloader
    except Exception:  # noqa: BLE001 - a trainer that cannot say: throughput in steps per second
        return None
    batch_size = getattr(loader, "batch_size", None)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        return None
    accumulate = getattr(trainer, "accumulate_grad_batches", 1)
    processes = getattr(trainer, "world_size", 1)
    return (
        batch_size
        * (accumulate if isinstance(accumulate, int) else 1)
        * (processes if isinstance(processes, int) else 1)
    )


def _rank() -> int:
    """This process's global rank, as Lightning set it (0 without multi-process training)."""
    return int(getattr(rank_zero_only, "rank", 0))


class TuitrainLogger(Logger):
    """A Lightning logger that records one tuitrain run (see the module's docstring).

    runs_dir, label, project (the group the run is listed under; default "lightning"), config (more settings for
    the run's config), epochs (planned epochs; default: the trainer's max_epochs): as tuitrain.init takes them."""

    def __init__(
        self,
        runs_dir: str = "runs",
        label: str | None = None,
        project: str = "lightning",
        config: dict[str, Any] | None = None,
        epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.label = label
        self.project = project
        self.initial_config = dict(config or {})
        self.planned_epochs = epochs
        self._run: script.Run | None = None
        self._epoch: int | None = None
        """Lightning's epoch of the last logged step."""
        self._epoch_figures: dict[str, Any] = {}
        """Epoch-level figures logged in that epoch (no per-step twin): what closes it."""
        self._trainer: Callable[[], Any] | None = None
        """The trainer that logs here (a weak reference), once Lightning has handed over its module (log_graph)."""
        self._sized = False
        """Whether the samples per step were looked up (at the first metrics: the dataloader is loaded by then)."""

    @property
    def name(self) -> str:
        return self.project

    @property
    def version(self) -> str:
        """The run's id (its folder under runs_dir); the run starts here if it has not yet."""
        return self.experiment.id if _rank() == 0 else ""

    @property
    def save_dir(self) -> str:
        return self.runs_dir

    @property
    def root_dir(self) -> str:
        return self.runs_dir

    @property
    def log_dir(self) -> str:
        return self.experiment.dir if _rank() == 0 else self.runs_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> script.Run:
        """The tuitrain run (tuitrain.script.Run), started at first use."""
        if self._run is None:
            self._run = script.init(
                label=self.label,
                config=config_values(self.initial_config),
                runs_dir=self.runs_dir,
                preset=self.project,
                epochs=self.planned_epochs,
            )
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        run = self.experiment
        run.config.update(config_values(_convert_params(params)))
        run.keeper.save(always=True)  # at fit's start: a watcher shows the config at once, not seconds later

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Lightning hands over its module at the start of fit: its trainer says the planned epochs now, and the
        samples per step once training has begun."""
        try:
            trainer = model.trainer
        except RuntimeError:  # a module not attached to a trainer (a direct call)
            return
        if trainer is None:
            return
        self._trainer = ref(trainer)
        if self.planned_epochs is None and (epochs := planned_epochs(trainer)) is not None:
            run = self.experiment
            self.planned_epochs = run.planned_epochs = epochs
            run.record.spec.epochs = epochs
            if run.record.script is not None:
                run.record.script.epochs = epochs
            run.keeper.save(always=True)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        run = self.experiment
        if not self._sized and self._trainer is not None:
            self._sized = True
            trainer = self._trainer()
            if trainer is not None and (samples := samples_per_step(trainer)) is not None:
                run.record.spec.batch_size = samples
                if run.record.script is not None:
                    run.record.script.batch_size = samples
        if run.finished:
            script.warn_once(
                "log_metrics after finalize",
                "tuitrain: Lightning logged metrics after the run ended (a trainer.validate/test after fit); they "
                "are not recorded: give that call its own TuitrainLogger (said once)",
            )
            return
        values = dict(metrics)
        epoch = values.get(EPOCH_KEY)
        if epoch is not None and self._epoch is not None and int(epoch) > self._epoch:
            self._close_epoch()
        if epoch is not None:
            self._epoch = int(epoch)
        for name, value in values.items():
            if name != EPOCH_KEY and not name.endswith(STEP_SUFFIX) and f"{name}{STEP_SUFFIX}" not in values:
                self._epoch_figures[name] = float(value)
        run.log(values, step=step, commit=False)

    @rank_zero_only
    def save(self) -> None:
        """Lightning calls it after every log_metrics: the run file is written at most every few seconds as for
        any script (each write is fsynced: one per step would cost more than the step)."""
        if self._run is not None and not self._run.finished:
            self._run.keeper.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning's end of fit, validate or test: "success", "failed" (any exception, Ctrl-C included: the one
        being handled tells which), or "finished" (a cluster's requeue signal)."""
        run = self._run
        if run is None or run.finished:
            return
        if status == "success":
            self._close_epoch()
            run.finish("completed")
            return
        if status == "finished":  # requeued on a cluster: saved, to be resumed by a new process
            run.finish("interrupted", "stopped by the cluster's requeue signal")
            return
        kind, error, tb = sys.exc_info()
        if isinstance(error, KeyboardInterrupt):
            run.finish("interrupted", "stopped by Ctrl-C")
        elif error is not None:
            run.record.traceback = "".join(traceback.format_exception(kind, error, tb))
            run.finish("failed", f"{type(error).__name__}: {error}")
        else:
            run.finish("failed", f"Lightning ended the run: {status}")

    def _close_epoch(self) -> None:
        """End the epoch in progress with the epoch-level figures logged in it."""
        run = self._run
        if run is None or self._epoch is None:
            return
        figures, self._epoch_figures = self._epoch_figures, {}
        if len(run.record.epochs) <= self._epoch:
            run.log({}, commit=True)  # the epoch's last step is complete: count it in this epoch, not the next
            run.log_epoch(**figures)
