"""A Hugging Face Trainer callback that records the run for tuitrain: `Trainer(..., callbacks=[TuitrainCallback()])`.

    from tuitrain.integrations.transformers import TuitrainCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[TuitrainCallback(label="lr=5e-5")])

What the Trainer logs becomes series at its global step, under the names Hugging Face's own trackers use:
`train/loss`, `train/learning_rate`, `train/grad_norm`, `train/epoch`, `eval/loss`...; the end-of-training figures
(train_runtime, train_loss: the mean, total_flos...) go to the run's summary. The TrainingArguments and the
model's config are the run's config. An epoch ends with the evaluation that follows it (eval/... figures); the run
ends at on_train_end (completed), or failed when an exception ends training: the logging API finishes a run
that its process leaves unfinished (failed after an uncaught exception, interrupted after Ctrl-C), and a new
training in the same process ends the previous one failed if it never reached on_train_end. Only the main
process records. It logs through the logging API (tuitrain.script), like any script.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    from tuitrain.integrations import missing

    raise missing("Hugging Face transformers", "transformers", exc) from None

from tuitrain import script
from tuitrain.integrations import config_values

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
"""Figures the Trainer logs once, at the end of training: the run's summary, not series (as its wandb callback)."""
UNFINISHED = "its training stopped before on_train_end (an exception in training, caught by the script)"

_started: list[script.Run] = []
"""Runs started by these callbacks in this process, to end one that its training left unfinished."""


TIMINGS = ("runtime", "_per_second")
"""Evaluation figures that time it (eval/runtime, eval/samples_per_second): series, but not an epoch's figures."""


def training_settings(args: TrainingArguments) -> dict[str, Any]:
    """The TrainingArguments that differ from their defaults (all ~150 would bury the few that were chosen), and
    the output folder; tokens masked as the Trainer's to_dict masks them."""
    values = args.to_dict()
    chosen = {"output_dir": values.get("output_dir")}
    for f in dataclasses.fields(args):
        if f.name not in values:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is dataclasses.MISSING or values[f.name] != default:
            chosen[f.name] = values[f.name]
    return chosen


def model_settings(model: Any) -> dict[str, Any]:
    """The model's config (a PretrainedConfig): what differs from its class's defaults, as to_diff_dict gives it."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    diff = config.to_diff_dict() if hasattr(config, "to_diff_dict") else config.to_dict()
    return {k: v for k, v in diff.items() if k != "transformers_version"}


def series_name(key: str) -> str:
    """Hugging Face's names for its trackers: eval_loss -> eval/loss, test_x -> test/x, loss -> train/loss."""
    for prefix in ("eval", "test"):
        if key.startswith(f"{prefix}_"):
            return f"{prefix}/{key[len(prefix) + 1 :]}"
    return f"train/{key}"


def samples_per_step(args: TrainingArguments) -> int:
    """Training samples in one of the Trainer's steps (its global step: one optimizer step): the per-device batch
    size times the GPUs one process drives, gradient accumulation and processes."""
    return int(args.train_batch_size) * max(int(args.gradient_accumulation_steps), 1) * max(int(args.world_size), 1)


class TuitrainCallback(TrainerCallback):
    """Records a Trainer's training as a tuitrain run (see the module's docstring).

    runs_dir, label (default: the TrainingArguments' run_name), project (the group it is listed under; default
    "transformers"), config (more settings for the run's config): as tuitrain.init takes them."""

    def __init__(
        self,
        runs_dir: str = "runs",
        label: str | None = None,
        project: str = "transformers",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.runs_dir = runs_dir
        self.label = label
        self.project = project
        self.extra_config = dict(config or {})
        self.run: script.Run | None = None
        self._epoch_open = False
        self._epoch_figures: dict[str, Any] = {}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        for earlier in _started:
            if not earlier.finished:
                earlier.finish("failed", UNFINISHED)
        _started.clear()
        config = {**model_settings(model), **training_settings(args), **self.extra_config}
        run_name = getattr(args, "run_name", None)
        label = self.label or (run_name if run_name and run_name != args.output_dir else None)
        epochs = math.ceil(args.num_train_epochs) if args.max_steps is None or args.max_steps <= 0 else None
        self.run = script.init(
            label=label,
            config=config_values(config),
            runs_dir=self.runs_dir,
            preset=self.project,
            epochs=epochs,
            batch_size=samples_per_step(args),
        )
        _started.append(self.run)
        self._epoch_open, self._epoch_figures = False, {}

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._close_epoch()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # the evaluation that follows belongs to this epoch: it closes at the next epoch's start or the end
        self._epoch_open = self.run is not None

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self.run
        if run is None or run.finished or not state.is_world_process_zero or not logs:
            return
        values: dict[str, float] = {}
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # text (a model card line), not a figure
            if key in SUMMARY_KEYS:
                run.summary[key] = value
                continue
            name = series_name(key)
            values[name] = float(value)
            if name.startswith("eval/") and not name.endswith(TIMINGS):
                self._epoch_figures[name] = float(value)
        if values:
            run.log(values, step=state.global_step, commit=False)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or run.finished:
            return
        self._epoch_open = True  # the last epoch, with whatever evaluation it had
        self._close_epoch()
        run.finish("completed")

    def _close_epoch(self) -> None:
        run = self.run
        if run is None or run.finished or not self._epoch_open:
            return
        figures, self._epoch_figures, self._epoch_open = self._epoch_figures, {}, False
        run.log({}, commit=True)  # the epoch's last step is complete: count it in this epoch, not the next
        run.log_epoch(**figures)
