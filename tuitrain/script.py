"""The logging API: any PyTorch training script writes a run that tuitrain watches, lists and compares.

    with tuitrain.init(label="lr=3e-4", config={"lr": 3e-4}) as run:
        ...
        run.log(loss)                                      # every training batch
        run.log({"train/loss": loss, "lr": lr}, step=s)    # or named series, wandb's way
        run.log_epoch(test_accuracy=acc, val_loss=vl)      # every epoch end: any figures by name

A wandb script runs changed only by `import tuitrain as wandb`: `init(project=, name=, config=, dir=, group=,
tags=, notes=)`, `log`, `config`, `summary`, `define_metric`, `finish` and `run` at module level (tuitrain/
__init__.py); what tuitrain does not do (artifacts, media, watch, sweeps) is accepted and ignored with one warning
each, never an exception in the training loop.

The run is recorded by the record-keeper (tuitrain.keeper) that the engine's loop uses too: a JSON record and an
append-only series log, so `tuitrain watch`, the home screen and `tuitrain compare` take it as they take a preset
run. Values are kept as they come and read back in chunks: `.item()` on a GPU tensor waits for the GPU, and a
script that waits once per batch trains slower.

This module imports neither the engine nor torch: torch is used only when the script has imported it.
"""

from __future__ import annotations

import atexit
import math
import os
import platform
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tuitrain.catalog import new_invocation_dir, slug
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RunStatus
from tuitrain.keeper import (
    READ_BACK_EVERY_S,
    READ_EVERY,
    EpochLosses,
    RecordKeeper,
    TuitrainWarning,
    scalar,
    torch_module,
)
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, ScriptInfo

PERSIST_EVERY_S = 2.0
"""The run file is rewritten at most this often while training (and at every epoch end and the end)."""
DEFAULT_PRESET = "script"
"""The group a script run is listed under when init() names none."""
WANDB_INIT_IGNORED = (
    "entity",
    "job_type",
    "mode",
    "id",
    "resume",
    "reinit",
    "save_code",
    "settings",
    "anonymous",
    "sync_tensorboard",
    "monitor_gym",
    "allow_val_change",
    "magic",
    "config_exclude_keys",
    "config_include_keys",
    "resume_from",
    "fork_from",
)
"""wandb.init arguments that mean nothing here: accepted, ignored with one warning each when given."""

__all__ = ["READ_BACK_EVERY_S", "READ_EVERY", "Config", "Run", "Summary", "init"]

_warned: set[str] = set()


def warn_once(what: str, message: str | None = None) -> None:
    """One warning per kind of unsupported call in a process, never an exception."""
    if what not in _warned:
        _warned.add(what)
        warnings.warn(message or f"tuitrain: {what} is not supported; ignored (said once)", TuitrainWarning, 3)


def _environment() -> EnvInfo:
    torch = torch_module()
    return EnvInfo(
        device="CPU",
        device_type="cpu",
        torch_version=getattr(torch, "__version__", "not imported"),
        threads=torch.get_num_threads() if torch is not None else os.cpu_count() or 1,
        python_version=platform.python_version(),
    )


def said_batch_size(config: Mapping[str, Any], batch_size: int | None) -> int | None:
    """The batch size a script said: init's batch_size, else its config's; None where neither says one."""
    bs = batch_size if batch_size is not None else config.get("batch_size")
    return bs if isinstance(bs, int) and not isinstance(bs, bool) and bs > 0 else None


def _spec(config: Mapping[str, Any], epochs: int | None, batch_size: int | None) -> RunSpec:
    """What a RunSpec can say of a script run: its epochs and batch size (for progress and throughput)."""
    values: dict[str, Any] = {"epochs": epochs or 1}
    if (bs := said_batch_size(config, batch_size)) is not None:
        values["batch_size"] = bs
    lr = config.get("lr")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= 10:
        values["lr"] = float(lr)
    return RunSpec(**values)


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """config as stored: nested mappings flattened to 'a/b' keys (an argparse Namespace read as its vars); values
    JSON scalars and short lists of them (TypeError otherwise: init() is not the training loop)."""
    if not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"tuitrain.init: config must be a dict, got {type(config).__name__}")
    checked: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"tuitrain.init: config keys must be strings, got {key!r}")
        name = f"{prefix}{key}"
        flat = flatten_config(value, f"{name}/") if isinstance(value, Mapping) else {name: value}
        if clash := next((k for k in flat if k in checked), None):
            raise ValueError(f"tuitrain.init: config has {clash!r} twice (nested dicts are stored as 'a/b' keys)")
        if isinstance(value, Mapping):
            checked.update(flat)
            continue
        if isinstance(value, tuple):
            value = list(value)
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (str, bool, int, float)) for v in items):
            raise TypeError(f"tuitrain.init: config[{name!r}] must be a number, string, bool, None or a list of them")
        checked[name] = value
    return checked


class Config(MutableMapping[str, Any]):
    """A run's config: item and attribute access (`config["lr"]`, `config.lr`), `update()` as wandb's; what is set
    goes into the run file at its next save."""

    def __init__(self, run: Run | None, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_values", values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def update(self, other: Any = (), /, allow_val_change: bool | None = None, **more: Any) -> None:
        values = dict(other) if isinstance(other, Mapping) else (vars(other) if hasattr(other, "__dict__") else {})
        self._values.update(flatten_config({**values, **more}))

    def setdefaults(self, values: Mapping[str, Any]) -> None:
        self.update({k: v for k, v in values.items() if k not in self._values})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


class Summary(MutableMapping[str, Any]):
    """A run's summary: the last value of each logged series, or what the script set (`summary["best"] = x`)."""

    def __init__(self, keeper: RecordKeeper | None) -> None:
        self._keeper = keeper

    def _values(self) -> dict[str, Any]:
        return self._keeper.record.summary if self._keeper is not None else {}

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if self._keeper is None:
            warn_once("summary before init()")
            return
        if not isinstance(value, (str, bool, int, float)) and value is not None:
            value = scalar(f"summary[{key!r}]", value)
        self._keeper.set_summary(key, value)

    def __delitem__(self, key: str) -> None:
        if self._keeper is not None:
            self._keeper.summary_set.pop(key, None)
            self._keeper.record.summary.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())

    def __repr__(self) -> str:
        return f"Summary({self._values()!r})"


class Run:
    """One script run: its record-keeper (values logged, read back in chunks, saved), config and summary."""

    def __init__(
        self,
        label: str | None = None,
        config: Any = None,
        runs_dir: str | os.PathLike[str] | None = None,
        preset: str | None = None,
        epochs: int | None = None,
        batches_per_epoch: int | None = None,
        batch_size: int | None = None,
        read_every: int = READ_EVERY,
        *,
        group: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        notes: str | None = None,
    ) -> None:
        values = flatten_config(config if config is not None else {})
        preset = preset or DEFAULT_PRESET
        label = label or Path(sys.argv[0] or "script").stem or "run"
        invocation, folder = new_invocation_dir(Path(runs_dir if runs_dir is not None else "runs"), preset)
        self.path = folder / f"01-{slug(label)}.json"
        """The run file."""
        self.planned_epochs = epochs
        """Epochs the script said it will train; None: open-ended."""
        script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else None
        record = RunRecord(
            id=f"{invocation}-01",
            preset=preset,
            invocation=invocation,
            label=label,
            spec=_spec(values, epochs, batch_size),
            env=_environment(),
            config=values,
            script=ScriptInfo(
                path=script,
                argv=list(sys.argv),
                cwd=os.getcwd(),
                epochs=epochs,
                batch_size=said_batch_size(values, batch_size),
            ),
            run_index=0,
            run_count=1,
            batches_per_epoch=batches_per_epoch,
            group=group,
            tags=list(tags or []),
            notes=notes,
        )
        self.record = record
        self._size_known()
        module = sys.modules[__name__]  # the constants as they are now (tests change them)
        self.keeper = RecordKeeper(
            record,
            self.path,
            read_every=read_every,
            read_every_s=module.READ_BACK_EVERY_S,
            save_every_s=module.PERSIST_EVERY_S,
        )
        self.epoch_start_step = 0
        """The keeper's step when the epoch in progress began."""
        assert record.config is not None  # given just above (pydantic keeps a copy: the config is that copy)
        self.config = Config(self, record.config)
        """The run's config (item and attribute access); the record holds the same dict."""
        self.summary = Summary(self.keeper)
        """The run's summary figures."""

    @property
    def name(self) -> str:
        return self.record.label

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def dir(self) -> str:
        return str(self.path.parent)

    @property
    def step(self) -> int:
        return self.keeper.step

    @property
    def finished(self) -> bool:
        return self.keeper.finished

    # --- logging -------------------------------------------------------------------------------

    def log(self, data: Any, step: int | None = None, commit: bool | None = None, sync: bool | None = None) -> None:
        """Named values, wandb's way: `log({"train/loss": loss, "lr": lr}, step=None, commit=None)`: floats, ints or
        0-d tensors (kept as they are, read back with the others later). Or one training batch's loss:
        `log(loss)`, the series "loss"."""
        keeper = self.keeper
        if keeper.finished:
            raise RuntimeError("tuitrain: log() after the run finished")
        if type(data) is dict or isinstance(data, Mapping):
            keeper.log(data, step, commit)
        else:
            keeper.log_loss(data)

    def log_epoch(
        self, test_accuracy: Any = None, test_loss: Any = math.nan, *, test_total: int = 0, **metrics: Any
    ) -> None:
        """Close an epoch with its figures: any scalars by name (`val_loss=...`), and for a classifier its test
        accuracy (percent) and test loss. `test_total`: test images evaluated (for compare's noise estimate)."""
        if self.keeper.finished:
            raise RuntimeError("tuitrain: log_epoch() after the run finished")
        record = self.record
        accuracy = None if test_accuracy is None else scalar("test_accuracy", test_accuracy)
        figures = {name: scalar(name, value) for name, value in metrics.items()}
        loss = scalar("test_loss", test_loss)
        epoch_start_step = self.epoch_start_step

        def build(losses: EpochLosses, duration: float) -> EpochRecord:
            # steps, not logged points: a loss logged every few steps still counts every step
            steps, self.epoch_start_step = self.keeper.step, self.keeper.step
            batch_size = record.script.batch_size if record.script is not None else None
            samples = (steps - epoch_start_step) * batch_size if batch_size else 0
            return EpochRecord(
                epoch=len(record.epochs) + 1,
                initial_loss=losses.first,
                final_loss=losses.last,
                mean_loss=losses.mean,
                test_loss=loss,
                test_accuracy=accuracy,
                test_correct=round(accuracy * test_total / 100) if accuracy is not None else 0,
                test_total=test_total,
                duration_s=duration,
                eval_s=0.0,
                paused_s=0.0,
                samples_per_s=samples / duration if duration > 0 else 0.0,
                metrics=figures,
                steps=(record.epochs[-1].steps or 0 if record.epochs else 0) + losses.count,
            )

        def settle() -> None:
            if test_total:
                record.test_size = test_total
            self._size_known()
            if self.planned_epochs is None:
                record.spec.epochs = len(record.epochs) + 1  # open-ended: one more is always coming, until finish()

        self.keeper.end_epoch(build, settle)

    def define_metric(
        self,
        name: str,
        step_metric: str | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        goal: str | None = None,
        overwrite: bool | None = None,
    ) -> None:
        """Whether lower or higher is better for a metric (goal "min" or "max"; wandb's "minimize"/"maximize" and
        summary="min"/"max" too): compare ranks by it. A step_metric is not supported (ignored, one warning)."""
        if step_metric is not None:
            warn_once("define_metric(step_metric=...)")
        if goal is None and summary in ("min", "max"):
            goal = summary
        self.keeper.define_metric(name, goal)

    def finish(
        self, status: RunStatus | int | None = None, error: str | None = None, quiet: bool | None = None
    ) -> None:
        """End the run: read back what is left and save it with `status` (completed, failed, interrupted...; wandb's
        exit code: 0 completed, another failed). A second call does nothing."""
        if isinstance(status, int):
            status = "completed" if status == 0 else "failed"
        if self.keeper.finished:
            return
        if self.planned_epochs is None:
            self.record.spec.epochs = max(len(self.record.epochs), 1)
        self.keeper.finish(status or "completed", error)
        _forget(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.finish("completed")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("interrupted", "stopped by Ctrl-C")
        else:
            self.record.traceback = "".join(traceback.format_exception(kind, exc, tb))
            self.finish("failed", f"{type(exc).__name__}: {exc}")

    def __getattr__(self, name: str) -> Any:
        # wandb's Run has more (log_artifact, watch, alert, save...): accepted, ignored, said once
        if name.startswith("_"):
            raise AttributeError(name)
        return Ignored(f"run.{name}")

    # --- inside --------------------------------------------------------------------------------

    def _size_known(self) -> None:
        record = self.record
        if record.batches_per_epoch:
            record.train_size = record.batches_per_epoch * record.spec.batch_size


class Ignored:
    """What tuitrain does not do (wandb.Image, wandb.watch, run.log_artifact...): callable, any attribute, any
    use; the first use warns once, nothing raises."""

    def __init__(self, what: str) -> None:
        self._what = what
        warn_once(what)

    def __call__(self, *args: Any, **kwargs: Any) -> Ignored:
        return self

    def __getattr__(self, name: str) -> Ignored:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __enter__(self) -> Ignored:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{self._what}: not supported by tuitrain, ignored>"


# --- module level: `import tuitrain as wandb` ------------------------------------------------------

current: Run | None = None
"""The run started by the last init() and not finished yet (wandb.run)."""


def _forget(run: Run) -> None:
    global current
    if current is run:
        current = None


def _finish_at_exit() -> None:
    """A script that never calls finish(): its run ends with the process (failed after an uncaught exception)."""
    run = current
    if run is None or run.finished:
        return
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)  # 3.12 on / before
    if isinstance(error, KeyboardInterrupt):
        run.finish("interrupted", "stopped by Ctrl-C")
    elif error is not None:
        run.finish("failed", f"{type(error).__name__}: {error}")
    else:
        run.finish("completed")


def init(
    label: str | None = None,
    config: Any = None,
    runs_dir: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    batches_per_epoch: int | None = None,
    batch_size: int | None = None,
    read_every: int = READ_EVERY,
    *,
    project: str | None = None,
    name: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    notes: str | None = None,
    **ignored: Any,
) -> Run:
    """Start a run that tuitrain can watch and compare; use it as a context manager, or call `finish()` (or let the
    process end: the run finishes with it).

    label / name: the run's name (default: the script's file name). config: free-form settings (JSON scalars and
    short lists; nested dicts become 'a/b' keys), compared as hyperparameters. runs_dir / dir: where its folder
    goes (default runs/). preset / project: the group it is listed under (default "script"). group, tags, notes:
    kept in the record. epochs: planned epochs (progress shows them; else open-ended). batches_per_epoch /
    batch_size: for progress and throughput before the first epoch ends (batch_size is also taken from
    config["batch_size"]). read_every: steps kept before one read-back. Other wandb arguments are ignored.
    """
    global current
    for key, value in ignored.items():
        if value is not None and key not in ("job_type",):
            warn_once(f"init({key}=...)")
    if current is not None and not current.finished:
        current.finish("completed")  # wandb's reinit: a second init ends the first run
    run = Run(
        label or name,
        config,
        runs_dir if runs_dir is not None else dir,
        preset or project,
        epochs,
        batches_per_epoch,
        batch_size,
        read_every,
        group=group,
        tags=tags,
        notes=notes,
    )
    if current is None and not _atexit_registered:
        _register_atexit()
    current = run
    return run


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    atexit.register(_finish_at_exit)
    _atexit_registered = True


def _run_or_raise(what: str) -> Run:
    if current is None:
        raise RuntimeError(f"tuitrain.{what}() before tuitrain.init()")
    return current


def log(data: Any, step: int | None = None, commit: bool | None = None, sync: bool | None = None) -> None:
    """`run.log` of the run started by init()."""
    _run_or_raise("log").log(data, step, commit)


def log_epoch(test_accuracy: Any = None, test_loss: Any = math.nan, *, test_total: int = 0, **metrics: Any) -> None:
    _run_or_raise("log_epoch").log_epoch(test_accuracy, test_loss, test_total=test_total, **metrics)


def define_metric(name: str, *args: Any, **kwargs: Any) -> None:
    _run_or_raise("define_metric").define_metric(name, *args, **kwargs)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    if current is not None:
        current.finish(exit_code)


def module_attribute(name: str) -> Any:
    """`tuitrain.<name>` where it is not a function of this module: the current run's run/config/summary, or an
    Ignored stand-in for what wandb has and tuitrain does not do."""
    if name == "run":
        return current
    if name == "config":
        return current.config if current is not None else Config(None, {})
    if name == "summary":
        return current.summary if current is not None else Summary(None)
    return Ignored(f"tuitrain.{name}")
