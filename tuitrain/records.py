"""Run records: the public file format, one JSON file per run.

Modelled on inspect_ai's EvalLog: a versioned pydantic model with a status and a docstring per
field. Files are written atomically, so a crash at any moment leaves the previous valid version.
Readers migrate older schema versions and refuse newer ones with a clear message.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)

from tuitrain.core import serieslog
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.errors import RecordError, first_error
from tuitrain.core.events import RunFinished
from tuitrain.core.serieslog import LOG_FORMAT_VERSION, SERIES_SUFFIX, Series, SeriesReader
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus

SCHEMA_VERSION = 5

NON_FINITE = ("NaN", "Infinity", "-Infinity")
"""How a non-finite float is written in a run file (JSON has no such numbers)."""

Loss = Annotated[float, WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": list(NON_FINITE)}]})]
"""A loss: a number, or one of NON_FINITE once a run has diverged."""
Figure = Annotated[float, Field(allow_inf_nan=False)]
"""A measured figure that is always a finite number (a time, a rate, an accuracy)."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EnvInfo(BaseModel):
    """Where the run trained."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True, ser_json_inf_nan="strings")

    device: str
    """Device name: the GPU's name, or 'CPU'."""
    device_type: Literal["cpu", "cuda"] = "cpu"
    """torch device type used."""
    torch_version: str
    """torch.__version__."""
    host: str = Field(default_factory=socket.gethostname)
    """Host name of the machine that trained."""
    threads: int
    """torch.get_num_threads() during training."""
    pid: int = Field(default_factory=os.getpid)
    """Process id of the training process (to tell a crashed run from a live one)."""
    python_version: str | None = None
    """Python version."""
    node_id: str | None = None
    """Ray node id of the machine that trained (runs trained with --executor ray); None otherwise."""


class EpochRecord(BaseModel):
    """One epoch: the assignment's per-epoch figures and a few more."""

    model_config = ConfigDict(use_attribute_docstrings=True, ser_json_inf_nan="strings")

    epoch: int = Field(ge=1)
    """1-based epoch number."""
    initial_loss: Loss
    """Loss of the first training batch of the epoch."""
    final_loss: Loss
    """Loss of the last training batch of the epoch."""
    mean_loss: Loss
    """Mean training batch loss over the epoch."""
    test_loss: Loss
    """Test loss averaged per sample (sum of per-sample losses / test_total)."""
    test_accuracy: Figure | None = Field(None, ge=0, le=100)
    """Test accuracy in percent: 100 * test_correct / test_total; None for a run that measures none (a
    regression, a language model: its figures are in metrics). Always set in files before version 4."""
    test_correct: int = Field(ge=0)
    """Correctly classified test images."""
    test_total: int = Field(ge=0)
    """Test images evaluated."""
    duration_s: Figure = Field(ge=0)
    """Seconds the epoch took: its training time plus eval_s; pauses (paused_s) and saving excluded. The sum
    over a run's epochs is its training time. (Files written before paused_s existed count pauses in.)"""
    samples_per_s: Figure = Field(ge=0)
    """Training samples per second of training time (evaluation and pauses excluded); 0 where the batch size is
    unknown (a script run that did not say it)."""
    eval_s: Figure = Field(0.0, ge=0)
    """Wall time of the evaluation after the epoch."""
    paused_s: Figure = Field(0.0, ge=0)
    """Seconds training was paused during the epoch (not in duration_s); 0 in files written before it existed."""
    metrics: dict[str, Loss] = Field(default_factory=dict)
    """Further scalars a script logged for this epoch (`run.log_epoch(lr=...)`), by name; shown in the epoch
    table and compared. Empty for preset runs and in version 1 files."""
    threads: list[int] = Field(default_factory=list)
    """Intra-op CPU thread counts the epoch trained with, in order: one entry, or more when the machine's cores
    were shared anew mid-epoch (another tuitrain started or ended). Empty in files written before it existed."""
    peak_gpu_memory_bytes: int | None = Field(default=None, ge=0)
    """Peak GPU memory allocated by training during the epoch (torch's allocator: training and evaluation);
    None on the CPU and in files written before it existed."""

    steps: int | None = Field(default=None, ge=0)
    """Training-loss points a script run had logged by this epoch's close (its epochs differ in length: a watcher
    places the boundary here); None for runs trained by tuitrain itself and in files written before it existed."""
    confusion: list[list[Annotated[int, Field(ge=0)]]] | None = None
    """The test confusion matrix: confusion[t][p] counts the test images of class t predicted as class p, classes
    in the dataset's label order (digits 0-9 for MNIST; tuitrain.core.confusion names them). Its diagonal's sum is
    test_correct. None for script runs and in files written before it existed."""

    @field_validator("confusion")
    @classmethod
    def _square(cls, matrix: list[list[int]] | None) -> list[list[int]] | None:
        if matrix is not None and any(len(row) != len(matrix) for row in matrix):
            raise ValueError(f"a confusion matrix is square: {len(matrix)} rows, each of {len(matrix)} counts")
        return matrix

    lr: Figure | None = Field(default=None, ge=0)
    """Learning rate the epoch trained with (RunSpec.lr_at: warm-up and schedule); None in files before version 5
    and for script runs (whose lr, if logged, is in metrics)."""
    train_accuracy: Figure | None = Field(default=None, ge=0, le=100)
    """Accuracy in percent on the epoch's training batches as they were trained (counted during the steps, the
    weights changing meanwhile: no extra pass); None where not counted (fused runs, script runs, older files)."""
    val_loss: Loss | None = None
    """Validation loss averaged per sample, on the images held out by RunSpec.val_split; None without a split."""
    val_accuracy: Figure | None = Field(default=None, ge=0, le=100)
    """Validation accuracy in percent: 100 * val_correct / val_total; None without a split."""
    val_correct: int | None = Field(default=None, ge=0)
    """Correctly classified validation images; None without a split."""
    val_total: int | None = Field(default=None, ge=0)
    """Validation images evaluated; None without a split."""

    def event_fields(self) -> dict[str, Any]:
        """The figures that an EpochEnded event carries: the engine's, and the one a watcher rebuilds from a file."""
        fields = self.model_dump(
            exclude={"eval_s", "threads", "peak_gpu_memory_bytes", "steps", "val_correct", "val_total"}
        )
        if self.confusion is not None:  # an event is immutable: the matrix as tuples
            fields["confusion"] = tuple(tuple(row) for row in self.confusion)
        return fields


class ScriptInfo(BaseModel):
    """The script that trained a run through the logging API (`tuitrain.init`)."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    path: str | None = None
    """Absolute path of the script (sys.argv[0]); None from an interactive session."""
    argv: list[str] = Field(default_factory=list)
    """Its command line, sys.argv as the script saw it."""
    cwd: str | None = None
    """Working directory it ran in."""
    epochs: int | None = None
    """Epochs the script said it would train (`init(epochs=...)`); None: open-ended, or a file from before it."""
    batch_size: int | None = None
    """Samples per training step, as the script said (`init(batch_size=...)`, its config's batch_size, or the Lightning
    logger and Trainer callback from the framework); None: not known (its throughput is shown in steps per second)."""


class RunRestart(BaseModel):
    """A resume that could not continue the run and trained it again from epoch 1."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    at: datetime = Field(default_factory=utc_now)
    """When the run was restarted (UTC)."""
    reason: str
    """Why it could not continue, e.g. its checkpoint was missing or damaged."""
    epochs_discarded: int = Field(ge=0)
    """Completed epochs the run had before, thrown away (their figures are no longer in this file)."""


class RunRecord(BaseModel):
    """One training run, as saved under runs/."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True, ser_json_inf_nan="strings")

    schema_version: int = SCHEMA_VERSION
    """Version of this file format; readers refuse versions newer than they know."""
    id: str
    """Unique run id."""
    status: RunStatus = "running"
    """running, completed, interrupted (stopped before its end by the user, a signal, or run files that could not be
    written, e.g. a full disk: error says which; resumable), diverged (NaN/Inf loss) or failed (error in training)."""
    preset: str | None = None
    """Name of the preset this run belongs to."""
    invocation: str | None = None
    """Id shared by the runs started by one preset invocation."""
    label: str
    """Readable label of the run within its preset, e.g. 'lr=0.01'; the user's text once renamed (`tuitrain label`),
    the settings in `spec` untouched."""
    original_label: str | None = None
    """The label the run was given, once renamed (`tuitrain label`); None while it keeps it."""
    spec: RunSpec
    """Hyperparameters and data settings."""
    env: EnvInfo
    """Device, torch version, host, threads."""
    started_at: datetime = Field(default_factory=utc_now)
    """When the run started (UTC)."""
    ended_at: datetime | None = None
    """When the run ended (UTC); None while running."""
    heartbeat_at: datetime = Field(default_factory=utc_now)
    """Last time the training process wrote this file; a stale heartbeat means the process died."""
    batch_losses: list[Loss] = Field(default_factory=list)
    """Training loss of every batch, in order (global step = index); NaN/Inf are written as "NaN"/"Infinity"."""
    epochs: list[EpochRecord] = Field(default_factory=list)
    """Completed epochs, in order."""
    error: str | None = None
    """Why the run failed or diverged."""
    traceback: str | None = None
    """Python traceback of a failed run, for bug reports."""
    checkpoint: str | None = None
    """File name (beside this file) of the last epoch-end checkpoint, if any."""
    resumed_at: list[datetime] = Field(default_factory=list)
    """When the run was resumed from its last checkpoint (UTC), once per resume."""
    run_index: int | None = None
    """0-based position of this run in its preset invocation (for watchers; None in older files)."""
    run_count: int | None = None
    """Number of runs in its preset invocation (for watchers; None in older files)."""
    batches_per_epoch: int | None = None
    """Training batches per epoch, so a watcher can tell epoch and batch from a global step."""
    train_size: int | None = None
    """Training images seen per epoch (after subset and limit_train_batches)."""
    test_size: int | None = None
    """Test images evaluated after each epoch."""
    restarts: list[RunRestart] = Field(default_factory=list)
    """Each time a resume started this run again from epoch 1 (`tuitrain --resume --restart-missing`)."""
    config: dict[str, Any] | None = None
    """A script run's free-form configuration (`tuitrain.init(config=...)`): JSON scalars and short lists,
    compared as hyperparameters. None for preset runs, whose settings are in `spec`."""
    script: ScriptInfo | None = None
    """The script that trained this run through the logging API; None for runs trained by tuitrain itself."""
    group: str | None = None
    """A script's group of runs (`init(group=...)`, wandb's), e.g. the runs of one experiment; None otherwise."""
    tags: list[str] = Field(default_factory=list)
    """Tags: a script's (`init(tags=[...])`) and those added after (`tuitrain tag`, the app); compare and report
    show them, `--tag` filters by them."""
    notes: str | None = None
    """Notes on the run: a script's (`init(notes=...)`), or written after (`tuitrain note`, the app)."""
    series_file: str | None = None
    """File name (beside this file) of the append-only series log that holds the run's per-step metrics
    (tuitrain.core.serieslog; `tuitrain schema` describes its framing). None: the per-step losses are in
    batch_losses (every file before version 4)."""
    loss_series: str | None = None
    """Name of the per-step series that is the training loss: readers fill batch_losses with its values (the
    loss chart, compare's final loss). None: no series is the loss."""
    steps_logged: int = Field(default=0, ge=0)
    """Points in the series log when this file was last written (the log may be ahead while running)."""
    metric_goals: dict[str, Literal["min", "max"]] = Field(default_factory=dict)
    """Per metric, whether lower or higher is better (`define_metric(name, goal=...)`): compare ranks by it."""
    summary: dict[str, Any] = Field(default_factory=dict)
    """A script's summary figures by name (`run.summary[...]`, the last value of each logged metric unless set)."""
    _series: dict[str, Series] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _derived_on_read(cls, data: Any) -> Any:
        """Drop the derived fields a written file shows (computed again from the epochs)."""
        if isinstance(data, dict) and "best_epoch_chosen_on" in data:
            data = {k: v for k, v in data.items() if k != "best_epoch_chosen_on"}
        return data

    @property
    def series(self) -> dict[str, Series]:
        """The per-step series read from the log, by name (empty until read: read_record, or a follower)."""
        return self._series

    def attach_series(self, series: dict[str, Series]) -> None:
        """Take the series read from the log: kept by name, the loss series' values as batch_losses."""
        self._series = series
        loss = series.get(self.loss_series) if self.loss_series else None
        if self.series_file is not None:
            self.batch_losses = loss.values.tolist() if loss is not None else []

    @property
    def best_epoch(self) -> EpochRecord | None:
        """The best epoch: highest validation accuracy where the run held out a validation set (RunSpec.val_split),
        else highest test accuracy; the earliest of equals. None before an epoch with an accuracy."""
        on = self.best_epoch_chosen_on
        if on is None:
            return None
        key = "val_accuracy" if on == "validation" else "test_accuracy"
        scored = [e for e in self.epochs if getattr(e, key) is not None]
        return max(scored, key=lambda e: getattr(e, key))  # max keeps the first of equals

    @computed_field  # type: ignore[prop-decorator]
    @property
    def best_epoch_chosen_on(self) -> Literal["validation", "test"] | None:
        """What the best epoch (and so best_accuracy, its test accuracy) is chosen on: "validation" when an epoch has
        a validation accuracy (RunSpec.val_split), "test" when only test accuracies exist (no split: the test set
        both chooses and reports), None without either. Written for readers; derived again when read."""
        if any(e.val_accuracy is not None for e in self.epochs):
            return "validation"
        if any(e.test_accuracy is not None for e in self.epochs):
            return "test"
        return None

    @property
    def best_accuracy(self) -> float | None:
        """Test accuracy of the best epoch (chosen on validation where there is a split, else the best test
        accuracy)."""
        best = self.best_epoch
        return best.test_accuracy if best is not None else None

    @property
    def final_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None

    def goal_of(self, name: str) -> Literal["min", "max"]:
        """Whether lower or higher is better for a metric: as defined, else max for accuracies, min for the rest."""
        goal = self.metric_goals.get(name)
        if goal is not None:
            return goal
        for pattern, defined in self.metric_goals.items():  # define_metric("val/*", goal=...)
            if fnmatch.fnmatchcase(name, pattern):
                return defined
        return "max" if "acc" in name.lower() else "min"

    @property
    def training_s(self) -> float:
        """Training and evaluation time of the completed epochs: the sum of their durations.

        Unlike ended_at - started_at, it leaves out pauses, start-up and the downtime between a crash
        and its resume.
        """
        return sum(e.duration_s for e in self.epochs)


def run_finished(
    record: RunRecord, run_index: int, path: Path | None, *, status: str | None = None, error: str | None = None
) -> RunFinished:
    """The RunFinished that says how `record`'s run ended (its status and error unless given: a watcher reports a
    crash its file cannot say), its best accuracy and what that best was chosen on."""
    return RunFinished(
        run_id=record.id,
        label=record.label,
        run_index=run_index,
        status=status if status is not None else record.status,
        path=path,
        error=error if error is not None else record.error,
        best_accuracy=record.best_accuracy,
        best_on_validation=record.best_epoch_chosen_on == "validation",
    )


# Migrations from older schema versions: version -> function turning that version's dict into the next.
def _from_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added what script runs need (config, script, EpochRecord.metrics), all optional: a version 1
    file is a version 2 file without them."""
    return {**data, "schema_version": 2}


def _from_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 may store status 'crashed' (written by the invoking process when a worker process training the
    run died) and adds EpochRecord.threads: a version 2 file is a version 3 file without them."""
    return {**data, "schema_version": 3}


def _from_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 may keep the per-step metrics in a series log beside the file (series_file, loss_series,
    steps_logged), adds metric_goals, summary, group, tags and notes, and lets an epoch have no test_accuracy: a
    version 3 file is a version 4 file with its losses inline."""
    return {**data, "schema_version": 4}


def _from_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 5 adds optional per-epoch figures (learning rate, training accuracy, validation, per-class results:
    EpochRecord.confusion, the test confusion matrix), run housekeeping fields (original_label, kept when a run is
    renamed), a script's batch size, and the spec's optimiser and schedule keys (momentum, nesterov, weight_decay,
    lr_schedule, lr_step_epochs, lr_gamma, warmup_epochs, val_split; their defaults are what older runs did; the best
    epoch is chosen on validation when an epoch has a val_accuracy); preset runs keep their losses in a series log
    too: a version 4 file is a version 5 file without them."""
    return {**data, "schema_version": 5}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _from_v1,
    2: _from_v2,
    3: _from_v3,
    4: _from_v4,
}


def migrate(data: dict[str, Any], source: str = "run file") -> dict[str, Any]:
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(f"{source}: not a tuitrain run record (no integer 'schema_version').")
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"{source}: written by a newer tuitrain (schema_version {version}; this version reads up to "
            f"{SCHEMA_VERSION}). Upgrade tuitrain to read it."
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise RecordError(f"{source}: schema_version {version} is too old to migrate.")
        data = step(dict(data))
        if not isinstance(data.get("schema_version"), int) or data["schema_version"] <= version:
            raise RuntimeError(
                f"migration from schema_version {version} must raise the version"
            )  # a bug, not bad input
        version = data["schema_version"]
    return data


def parse_record(text: str, source: str = "run file") -> RunRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # some of json's messages end in 'at' ("Unterminated string starting at"): the line number follows them
        what = exc.msg.removesuffix(" at")
        raise RecordError(f"{source}: not valid JSON ({what} at line {exc.lineno}).") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer too long to convert, absurd nesting
        raise RecordError(f"{source}: not a readable run record ({type(exc).__name__}: {str(exc)[:100]}).") from None
    if not isinstance(data, dict):
        raise RecordError(f"{source}: not a tuitrain run record (top level is not an object).")
    data = migrate(data, source)
    try:
        return RunRecord.model_validate(data)
    except RecursionError:
        raise RecordError(f"{source}: invalid run record: nested too deeply.") from None
    except ValidationError as exc:
        error = first_error(exc)
        where, msg = error.where, error.msg
        raise RecordError(f"{source}: invalid run record: {where}: {msg}.") from None


def read_record(path: Path, series: bool = True) -> RunRecord:
    """Read and validate a run file, and (unless `series` is False) its series log; raises RecordError with the
    reason if it cannot. A missing series log is a run that has not logged a step yet; a torn tail is left out."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read ({exc}).") from None
    record = parse_record(text, str(path))
    if series:
        read_series_of(record, Path(path).parent)
    return record


def read_series_of(record: RunRecord, folder: Path) -> None:
    """Attach a record's series log (its series_file, in `folder`), if it names one; RecordError if it cannot be
    read. A missing log is a run that has not logged a step yet; a torn tail is left out."""
    if record.series_file is None:
        return
    reader = SeriesReader(Path(folder) / record.series_file)
    try:
        reader.read_new()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RecordError(f"{reader.path}: cannot read ({exc.strerror or exc}).") from None
    record.attach_series(reader.series)


def record_text(record: RunRecord, beat: bool = True) -> str:
    """The run file's text, its heartbeat set to now (unless `beat` is False: an edit by another process than the
    one training it). A run with a series log keeps its losses there only."""
    if beat:
        record.heartbeat_at = utc_now()
    exclude = {"batch_losses"} if record.series_file is not None else None
    return record.model_dump_json(indent=1, exclude=exclude)


def write_record(record: RunRecord, path: Path) -> None:
    atomic_write_text(path, record_text(record))


def record_schema() -> dict[str, Any]:
    """The run file's JSON Schema; its `x-series-log` says how the series log beside it is framed."""
    schema = RunRecord.model_json_schema()
    schema["x-series-log"] = {
        "file": f"series_file, beside the run file (its name with {SERIES_SUFFIX})",
        "format_version": LOG_FORMAT_VERSION,
        "framing": " ".join((serieslog.__doc__ or "").split()),
    }
    return schema
