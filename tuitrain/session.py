"""Running a preset: one invocation folder under runs/, one run file per run, runs in turn.

The front ends (headless CLI and the Textual app) reach the engine only through this module: they
train with PresetInvocation and their own sink, and ask the questions below (device, data,
estimates). Never imports textual.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from tuitrain.catalog import PLAN_FILE, TRASH_DIR, effective_status, new_invocation_dir, slug
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.control import RunControl
from tuitrain.core.cores import machine_cores
from tuitrain.core.errors import DataError, PresetError, RecordError, TuitrainError, first_error
from tuitrain.core.events import LogMessage, Sink
from tuitrain.core.folder_lock import LOCK_FILE, holder_line
from tuitrain.core.ray_options import with_resources
from tuitrain.core.spec import RunSpec
from tuitrain.core.status import RESUMABLE
from tuitrain.core.tasks import RunTask
from tuitrain.executors.fused import FusedExecutor
from tuitrain.executors.inprocess import InProcessWorker
from tuitrain.executors.local import LocalWorker
from tuitrain.executors.scheduler import Scheduler, Worker
from tuitrain.executors.threads import ThreadWorker
from tuitrain.presets import Preset, PresetRun
from tuitrain.records import RunRecord, RunRestart, read_record
from tuitrain.remote_control import RemoteControls, RequestPoller
from tuitrain.train import estimate
from tuitrain.train.checkpoint import checkpoint_path, load_checkpoint
from tuitrain.train.data import MnistArrays, resolve_mnist
from tuitrain.train.device import gpu_count, select_device
from tuitrain.train.fused_tasks import fusion_plan
from tuitrain.train.models import check_model
from tuitrain.train.side_by_side import SharedTensors

if TYPE_CHECKING:
    from tuitrain.core.ray_options import RayOptions
    from tuitrain.executors.ray import RayCluster

DEFAULT_RUNS_DIR = Path("runs")
"""Where invocation folders go: runs/ in the folder tuitrain is started from (--runs-dir overrides it)."""
_held_locks: dict[Path, IO[str]] = {}
"""Invocation folders this process holds locked, to their open lock files."""


class PlannedRun(BaseModel):
    label: str
    """Label of the run within its preset."""
    spec: RunSpec
    """Settings of the run, overrides applied."""
    file: str
    """Run file name in the invocation folder."""


class InvocationPlan(BaseModel):
    """The runs a preset invocation was asked to train, written when its folder is created."""

    schema_version: int = 1
    """Version of this file format."""
    preset: str
    """Preset name."""
    title: str
    """Preset title."""
    invocation: str
    """Invocation id (the folder name)."""
    runs: list[PlannedRun]
    """Every run, in order."""


def log_to(sink: Sink) -> Callable[[str], None]:
    """A function that sends a line of text to `sink` as a LogMessage."""
    return lambda text: sink(LogMessage(text))


def device_label(device: str = "auto") -> str:
    """The device a run with this `device` setting trains on, as the progress line names it; TuitrainError
    if it is not available."""
    return estimate.planned_device(select_device(device))


Jobs = int | Literal["auto"]
"""How many runs train at once: a number, or "auto" (see plan_jobs)."""
SMALL_MODELS_PER_GPU = 3
"""Runs of the small CNNs (Model A/B) that --jobs auto puts on one GPU at once: each alone leaves it mostly idle.
Not measured on this project's machines yet: a first guess."""
LARGE_MODELS_SIDE_BY_SIDE = 2
"""Runs of larger models that --jobs auto trains at once on a lone GPU, side by side in this process (ResNet18 beside
AlexNet: each alone leaves it partly idle); with several GPUs, they get one each. Not measured yet: a first guess."""
MIN_PARALLEL_GAIN = 0.9
"""--jobs auto trains runs in parallel only if the estimate says it takes at most this share of the serial time:
worker processes cost seconds to start, which short runs do not win back."""


MIN_PARALLEL_SAMPLES = 100_000
"""Without time figures for a model yet, --jobs auto trains runs in parallel only if each trains at least this many
samples (epochs x training images): a few seconds of the small CNNs on the dev CPU."""


def check_gpus(gpus: list[int] | None) -> list[int]:
    """The GPUs runs may use: `gpus` (from --gpus) checked against this machine, or every visible one."""
    count = gpu_count()
    if gpus is None:
        return list(range(count))
    if count == 0:
        raise TuitrainError("--gpus: this machine has no CUDA GPU. Drop --gpus (runs train on the CPU).")
    missing = [g for g in gpus if not 0 <= g < count]
    if missing:
        raise TuitrainError(
            f"--gpus: no GPU {missing[0]} on this machine (it has {count}: 0"
            + (f"-{count - 1}" if count > 1 else "")
            + ")."
        )
    return list(dict.fromkeys(gpus))


def plan_jobs(requested: Jobs, specs: list[RunSpec], gpus: list[int]) -> int:
    """Runs to train at once: `requested` (at most one per run), or for "auto": on GPUs, up to SMALL_MODELS_PER_GPU
    small runs per GPU, else LARGE_MODELS_SIDE_BY_SIDE on a lone GPU and one per GPU on several; on the CPU, one run
    per core when the estimate says it pays (never for one core or one run). Uses cached time figures only: planning
    never calibrates."""
    if requested != "auto":
        return max(1, min(int(requested), len(specs)))
    if len(specs) <= 1:
        return 1
    on_gpu = [s for s in specs if select_device(s.device).type == "cuda"]
    if on_gpu and gpus:
        small = all(s.model in ("model_a", "model_b") for s in on_gpu)
        per_gpu = SMALL_MODELS_PER_GPU if small else LARGE_MODELS_SIDE_BY_SIDE if len(gpus) == 1 else 1
        return min(len(specs), per_gpu * len(gpus))
    jobs = min(len(specs), machine_cores())
    if jobs <= 1:
        return 1
    serial = estimate.parallel_seconds(specs, 1, calibrate=False)
    parallel = estimate.parallel_seconds(specs, jobs, calibrate=False)
    if serial is None or parallel is None:  # not timed on this machine yet: judge by the work alone
        return jobs if min(s.train_size() * s.epochs for s in specs) >= MIN_PARALLEL_SAMPLES else 1
    return jobs if parallel <= MIN_PARALLEL_GAIN * serial else 1


def plan_side_by_side(requested: Jobs, specs: list[RunSpec], gpus: list[int]) -> bool:
    """Whether --jobs auto trains the runs it puts at once side by side in this process (executors.threads, a CUDA
    stream each) rather than in worker processes: when they all train on CUDA and one GPU is used, where processes
    would time-slice it. On the CPU, worker processes: threads of one process measured no faster there
    (benchmarks/parallel_sweeps.py), and torch's thread count is one per process."""
    if requested != "auto" or len(gpus) != 1:
        return False
    return bool(specs) and all(select_device(s.device).type == "cuda" for s in specs)


def check_models(preset: Preset, runs: list[PresetRun]) -> None:
    """Each "module:Attr" model of the preset imports, builds and gives (batch, 10) logits on one batch; else a
    PresetError naming the preset file and the key (one line, exit 2)."""
    seen = set()
    for run in runs:
        spec = run.spec
        key = (spec.model, repr(spec.model_args), spec.model_dir)
        if ":" not in spec.model or key in seen:
            continue
        seen.add(key)
        try:
            check_model(spec.model, spec.model_args, spec.model_dir)
        except PresetError as exc:
            raise PresetError(f"{preset.source or preset.name}: {exc}") from None


def check_data(data_dir: Path | None) -> str:
    """Find and validate MNIST now (DataError says what is wrong); returns where it came from."""
    return resolve_mnist(data_dir).source


def estimated_seconds(
    specs: list[RunSpec], *, calibrate: bool = True, setup: bool = True, jobs: int = 1, gpus: int = 1
) -> float | None:
    """Estimated wall time of these runs on this machine (with preparing the data once when `setup`), trained
    `jobs` at a time over `gpus` GPUs (when they train on GPUs); None when a figure is missing and `calibrate` is
    off. Calibrates each new model for about a second."""
    if jobs > 1:
        return estimate.parallel_seconds(specs, jobs, calibrate=calibrate, devices=gpus)
    if setup:
        return estimate.preset_seconds(specs, calibrate=calibrate)
    return estimate.total_seconds(specs, calibrate=calibrate)


def start_estimate(specs: list[RunSpec]) -> float:
    """The estimated time of these runs for deciding whether to ask before starting them: also where their models
    cannot be timed alone now (estimated_seconds is None then), erring long (estimate.crowded_seconds)."""
    return estimate.crowded_seconds(specs)


def planned_estimate(
    specs: list[RunSpec], requested: Jobs, gpus: list[int], *, setup: bool = True
) -> tuple[int, float | None]:
    """The runs trained at once (plan_jobs) and the estimated wall time of these runs trained so. Calibrates what
    is missing first: plan_jobs weighs cached figures only."""
    seconds = estimated_seconds(specs, setup=setup)
    jobs = plan_jobs(requested, specs, gpus)
    if jobs > 1:
        seconds = estimated_seconds(specs, jobs=jobs, gpus=max(len(gpus), 1))
    return jobs, seconds


def check_writable(folder: Path) -> None:
    """Fail before training, not after an hour, if run files cannot be written; creates nothing.

    Probes the folder, or its nearest existing parent when it does not exist yet.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        probe = existing / f".tuitrain-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TuitrainError(
            f"{folder}: runs folder is not writable ({exc.strerror or exc}). Pass --runs-dir with a writable folder."
        ) from None


def lock_folder(folder: Path) -> int:
    """Hold an invocation folder for this process (until release_folder or exit), or say who holds it;
    returns the lock file's descriptor (for handing down to a detached child).

    An flock, not a pid check: two processes started together both see "not running" in the run files,
    but only one gets the lock. Taking a folder this process already holds does nothing more."""
    key = Path(folder).resolve()
    if key in _held_locks:
        return _held_locks[key].fileno()
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    lock = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = lock.read().strip() or "pid unknown"
        lock.close()
        raise TuitrainError(
            f"{folder}: another tuitrain ({holder}) is training or resuming these runs; wait for it to end or stop it."
        ) from None
    _note_holder(key, lock)
    return lock.fileno()


@contextmanager
def locked_for_checks(folder: Path) -> Iterator[None]:
    """Take a folder's lock; if what follows fails, let go of it again (unless it was held before)."""
    held_before = Path(folder).resolve() in _held_locks
    lock_folder(folder)
    try:
        yield
    except BaseException:
        if not held_before:
            release_folder(folder)
        raise


def adopt_folder_lock(folder: Path, fd: int) -> None:
    """Take over a folder lock that the parent (tuitrain --detach) took and passed down as an open file."""
    _note_holder(Path(folder).resolve(), os.fdopen(fd, "r+", encoding="utf-8"))


def _note_holder(key: Path, lock: IO[str]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(f"{holder_line()}\n")
    lock.flush()
    _held_locks[key] = lock


def release_folder(folder: Path | None) -> None:
    """Let go of a folder lock this process holds (closing the file: a detached child holding a copy keeps it)."""
    lock = _held_locks.pop(Path(folder).resolve(), None) if folder is not None else None
    if lock is not None:
        lock.close()


@dataclass
class PresetInvocation:
    """A preset's runs as they will be trained, with where their files go."""

    preset: Preset
    runs: list[PresetRun]
    runs_dir: Path
    data_dir: Path | None = None
    invocation_id: str = ""
    """The invocation's id: its folder's name, shared by the ids of its runs."""
    folder: Path | None = None
    records: list[RunRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Run file name of each run (in the invocation folder)."""
    kept: dict[int, RunRecord] = field(default_factory=dict)
    """On resume: runs that ended before (completed, diverged, failed), kept as they are."""
    resuming: dict[int, tuple[RunRecord, dict | None]] = field(default_factory=dict)
    """On resume: interrupted or crashed runs to continue, with their last checkpoint (None: from the start)."""
    restarting: list[int] = field(default_factory=list)
    """On resume with restart_missing: runs that had epochs but no usable checkpoint, trained again from epoch 1."""
    jobs: int = 1
    """Runs trained at once (plan_jobs); more than one: each in its own worker process, or side by side in this one."""
    jobs_asked: Jobs = 1
    """What was asked for: with "auto", `jobs` is planned again once the data (its real size) is loaded."""
    fused: list[list[int]] = field(default_factory=list)
    """Groups of run indices that train fused (train.fused_tasks.fusion_plan), planned as the runs start."""
    gpus: list[int] = field(default_factory=list)
    """GPUs the runs may use (--gpus, else every visible one)."""
    side_by_side: bool | None = None
    """Runs trained at once train on threads of this process (executors.threads) rather than in worker processes;
    None: as plan_side_by_side says when the runs start."""
    ray: RayOptions | None = None
    """Train on a Ray cluster with these options (--executor ray); None: on this machine."""
    ray_room: int = 0
    """The runs the Ray cluster holds at once, once joined."""
    started: list[int] = field(default_factory=list)
    """Runs that have started (or were kept on resume), by index."""
    run_controls: dict[str, RunControl] = field(default_factory=dict)
    """The controls of each run that has started, by run id (pause or stop that run alone)."""
    _arrays: MnistArrays = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [f"{i + 1:02d}-{slug(r.label)}.json" for i, r in enumerate(self.runs)]

    @classmethod
    def prepare(
        cls,
        preset: Preset,
        *,
        runs_dir: Path = DEFAULT_RUNS_DIR,
        overrides: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        jobs: Jobs | None = None,
        gpus: list[int] | None = None,
        ray: RayOptions | None = None,
    ) -> PresetInvocation:
        """Validate everything that can fail cheaply (overrides, device, GPUs, runs folder) before any training.
        `jobs`: runs at once (None: the preset's `jobs`); `gpus`: the GPUs to use (None: every visible one);
        `ray`: train on a Ray cluster (its unset resources from the preset's keys)."""
        usable_gpus = check_gpus(gpus) if ray is None else []
        runs = preset.expand(overrides)
        if ray is not None:
            ray = _ray_options(ray, [r.spec for r in runs], preset.cpus_per_run, preset.gpus_per_run)
        for run in runs if ray is None else []:  # on Ray, the devices are the cluster's
            select_device(run.spec.device)
        check_models(preset, runs)
        datasets = sorted({r.spec.dataset for r in runs} - {"mnist"})
        if datasets and data_dir is None and not os.environ.get("TUITRAIN_DATA_DIR"):
            raise DataError(
                f"dataset = {datasets[0]!r} needs its four IDX files: pass --data-dir DIR "
                "(only MNIST is found by itself)."
            )
        check_writable(Path(runs_dir))
        inv = cls(preset=preset, runs=runs, runs_dir=Path(runs_dir), data_dir=data_dir, gpus=usable_gpus, ray=ray)
        inv.jobs_asked = preset.jobs if jobs is None else jobs
        inv.jobs = plan_jobs(inv.jobs_asked, [r.spec for r in runs], usable_gpus)
        return inv

    def run(self, sink: Sink, control: RunControl | None = None, arrays: MnistArrays | None = None) -> list[RunRecord]:
        """Train the runs (but those kept on resume) through the scheduler (tuitrain.executors): one at a time in a
        thread of this process, `jobs` at a time in worker processes or side by side on threads of this process (one
        GPU), or on a Ray cluster."""
        control = control or RunControl()
        # on Ray, the cluster is joined first: one unreachable or too small is refused before anything is written
        cluster = self._join_cluster(sink) if self.ray is not None else None
        try:
            # --jobs auto on a GPU: runs that fuse train in this process first, as one program a group
            if cluster is None and self.jobs_asked == "auto":
                fresh = [i not in self.kept and i not in self.resuming for i in range(len(self.runs))]
                self.fused = fusion_plan([r.spec for r in self.runs], fresh)
            if self.fused:
                fused = {i for group in self.fused for i in group}
                alone = [r.spec for i, r in enumerate(self.runs) if i not in fused and i not in self.kept]
                self.jobs = plan_jobs("auto", alone, self.gpus)
            elif cluster is None and self.jobs > 1 and self.jobs_asked == "auto":  # planned for full MNIST: check
                self._arrays = arrays = arrays if arrays is not None else resolve_mnist(self.data_dir, log=log_to(sink))
                self.jobs = plan_jobs("auto", self.specs_to_train(arrays), self.gpus)
            in_process = cluster is None and self.jobs <= 1
            if self.side_by_side is None:
                in_groups = {i for group in self.fused for i in group}
                specs = [r.spec for i, r in enumerate(self.runs) if i not in in_groups and i not in self.kept]
                self.side_by_side = (
                    cluster is None and not in_process and plan_side_by_side(self.jobs_asked, specs, self.gpus)
                )
            scheduler = Scheduler(
                sink,
                control,
                start_worker=self._worker_starter(
                    cluster,
                    sink,
                    control,
                    lambda: scheduler.waiting_for_room(
                        max(0, self.ray_room - len(self.started)), self.jobs - self.ray_room
                    ),
                ),
                jobs=self.jobs,
                # a run in this process shares the invocation's controls, as a lone run always did
                on_start=functools.partial(self._starting, sink, control if in_process else None),
                on_refused=lambda task: self.started.remove(task.index),
                announce_queue=not in_process,
                gpus=self.gpus,
            )
            fused_records: dict[int, RunRecord] = {}
            try:
                if cluster is None:
                    scheduler.start()  # worker processes import torch while the data loads
                folder = self._prepare_folder(sink, control, arrays)
                if folder is None:
                    return self.records
                # `tuitrain stop|pause|unpause` and a watcher's keys reach the runs through the folder
                requests = RequestPoller(
                    folder,
                    control,
                    self.run_controls.get,
                    lambda: self.training_now(scheduler.records, fused_records),
                ).start()
                try:
                    if cluster is not None:
                        cluster.put_data(self._arrays)
                        scheduler.start()
                    tasks = self.tasks()
                    if self.fused:
                        tasks = self._train_fused(sink, control, tasks, fused_records)
                    scheduler.run(tasks, self._arrays)
                finally:
                    ended = {**self.kept, **fused_records, **scheduler.records}
                    self.records = [ended[i] for i in sorted(ended)]
                    requests.close()
                    release_folder(folder)
            finally:
                scheduler.close()
        finally:
            if cluster is not None:
                cluster.shutdown()
        return self.records

    def _train_fused(
        self, sink: Sink, control: RunControl, tasks: list[RunTask], records: dict[int, RunRecord]
    ) -> list[RunTask]:
        """Train the fused groups (executors.fused) in this process, their records into `records`; returns the tasks
        left for the scheduler (the runs that do not fuse, and those of a group that could not start fused)."""
        by_index = {t.index: t for t in tasks}
        groups = [[by_index[i] for i in group] for group in self.fused]
        labels = "; ".join(", ".join(t.label for t in group) for group in groups)
        log_to(sink)(f"Fused: {sum(len(g) for g in groups)} runs train as {len(groups)} batched program(s): {labels}")
        # each run of a group gets its own controls: pausing or stopping one takes it out of its group
        executor = FusedExecutor(sink, control, functools.partial(self._starting, sink, None))
        try:
            executor.run(groups, self._arrays)
        finally:
            records.update(executor.records)
            for task in executor.refused:
                self.started.remove(task.index)
        trained = {i for group in self.fused for i in group} - {t.index for t in executor.refused}
        return [t for t in tasks if t.index not in trained]

    def training_now(self, *ended: dict[int, RunRecord]) -> dict[str, str]:
        """The runs that have started and not ended (`ended`: the records of those that have), run id to label."""
        return {
            self.run_id(i): self.runs[i].label
            for i in list(self.started)
            if i not in self.kept and not any(i in records for records in ended)
        }

    def runs_at_once(self) -> int:
        """Runs that train side by side: the jobs, or the largest fused group."""
        return max([self.jobs, *(len(g) for g in self.fused)])

    def _join_cluster(self, sink: Sink) -> RayCluster:
        """Join the Ray cluster (or start an embedded one) and plan the runs at once from its room."""
        from tuitrain.executors.ray import RayCluster, plan_ray_jobs

        assert self.ray is not None
        cluster = RayCluster(self.ray)
        sink(LogMessage(f"Ray: {cluster.starting()}…"))
        cluster.connect()
        try:
            self.ray_room = cluster.capacity()
            self.jobs = plan_ray_jobs(self.jobs_asked, len(self.runs) - len(self.kept), self.ray_room)
            sink(LogMessage(f"Ray: {cluster.summary()}; up to {self.jobs} run(s) at a time"))
        except BaseException:
            cluster.shutdown()
            raise
        return cluster

    def _worker_starter(
        self, cluster: RayCluster | None, sink: Sink, control: RunControl, waiting_for_room: Callable[[], None]
    ) -> Callable[[], Worker]:
        """How the scheduler's workers start: as Ray actors on `cluster`, as threads of this process side by side, as
        worker processes (more than one run at a time), or as a thread of this process."""
        if cluster is not None:
            return lambda: cluster.worker(lambda: self.folder, waiting_for_room)
        if self.jobs > 1 and self.side_by_side:
            tensors = SharedTensors()  # one copy of the data on the device for all of them
            return lambda: ThreadWorker(tensors)
        if self.jobs > 1:
            return LocalWorker
        return lambda: InProcessWorker(sink, control)

    def _prepare_folder(self, sink: Sink, control: RunControl, arrays: MnistArrays | None) -> Path | None:
        """Load the data (kept in self._arrays), then make the invocation folder and take its lock; None when
        stopped meanwhile (nothing saved)."""
        log = log_to(sink)
        self._arrays = arrays if arrays is not None else resolve_mnist(self.data_dir, log=log)
        log(f"Data: MNIST from {self._arrays.source}")
        if control.stop_all.is_set():  # stopped while the data loaded: nothing to save
            return None
        if self.folder is None:
            self.invocation_id, self.folder = new_invocation_dir(self.runs_dir, self.preset.name)
            self.write_plan()
        lock_folder(self.folder)  # held from the start when resuming, or handed down by --detach
        if self.jobs > 1 and self.ray is None:
            where = "in worker processes"
            if self.side_by_side:
                on_gpu = all(select_device(s.device).type == "cuda" for s in self.specs_to_train())
                where = "side by side in this process, " + (
                    "each on its own CUDA stream" if on_gpu else "a thread each"
                )
            fused = sum(len(g) for g in self.fused)  # trained first, as their own programs
            count = len(self.runs) - len(self.kept) - fused
            after = " after the fused ones" if fused else ""
            log(f"Training {count} run(s){after}, up to {self.jobs} at a time {where}")
        return self.folder

    def tasks(self) -> list[RunTask]:
        """A task for each run still to train, in order (a resumed run's checkpoint is read as it starts)."""
        assert self.folder is not None
        return [
            RunTask(
                index=index,
                run_count=len(self.runs),
                run_id=self.run_id(index),
                label=run.label,
                spec=run.spec,
                preset=self.preset.name,
                invocation=self.invocation_id,
                run_file=self.folder / self.files[index],
                record_text=resumed_text(self.resuming[index][0]) if index in self.resuming else None,
            )
            for index, run in enumerate(self.runs)
            if index not in self.kept
        ]

    def _starting(self, sink: Sink, shared: RunControl | None, task: RunTask) -> tuple[RunTask, RunControl]:
        """Run `task` goes to a worker: noted as started, with its own controls (or `shared`); a resumed run's
        checkpoint is read now (one in memory at a time)."""
        self.started.append(task.index)
        if task.index in self.resuming:
            record, state = self.resuming[task.index]
            sink(LogMessage(f"Resuming {record.label} from epoch {len(state['epochs']) + 1 if state else 1}"))
            if state is not None:
                task = replace(task, checkpoint=checkpoint_path(task.run_file).read_bytes())
        control = self.run_controls[task.run_id] = shared or RunControl()
        return task, control

    def run_id(self, index: int) -> str:
        """The id of run `index`: a resumed run keeps its own."""
        if index in self.resuming:
            return self.resuming[index][0].id
        return f"{self.invocation_id}-{index + 1:02d}"

    def write_plan(self) -> None:
        assert self.folder is not None
        plan = InvocationPlan(
            preset=self.preset.name,
            title=self.preset.title,
            invocation=self.invocation_id,
            runs=[PlannedRun(label=r.label, spec=r.spec, file=f) for r, f in zip(self.runs, self.files)],
        )
        atomic_write_text(self.folder / PLAN_FILE, plan.model_dump_json(indent=1))

    @classmethod
    def resume(
        cls,
        target: Path,
        *,
        data_dir: Path | None = None,
        restart_missing: bool = False,
        jobs: Jobs = "auto",
        gpus: list[int] | None = None,
        ray: RayOptions | None = None,
    ) -> PresetInvocation:
        """Continue an interrupted or crashed run (a run file), or every unfinished run of an invocation folder.

        Takes the folder's lock first (another process resuming or training it is refused), then checks
        everything (files readable, runs resumable, checkpoints intact, folder writable) before any
        training; RecordError / TuitrainError say what is wrong. With `restart_missing`, a run whose
        checkpoint is missing or damaged is trained again from epoch 1 (its record says so) instead of
        refusing the whole resume.
        """
        usable_gpus = check_gpus(gpus) if ray is None else []
        target = Path(target)
        inv = (
            cls._resume_folder(target, data_dir, restart_missing)
            if target.is_dir()
            else cls._resume_file(target, data_dir, restart_missing)
        )
        inv.gpus = usable_gpus
        if ray is not None:
            inv.ray = _ray_options(ray, inv.specs_to_train(), None, None)
        inv.jobs_asked = jobs
        inv.jobs = plan_jobs(jobs, inv.specs_to_train(), usable_gpus)
        return inv

    def specs_to_train(self, arrays: MnistArrays | None = None) -> list[RunSpec]:
        """The settings of the runs still to train; with `arrays`, their subsets cut to the data's real size."""
        specs = [r.spec for i, r in enumerate(self.runs) if i not in self.kept]
        if arrays is None:
            return specs
        n = len(arrays.train_labels)
        return [s.model_copy(update={"subset": min(s.subset or n, n)}) for s in specs]

    @classmethod
    def _resume_file(cls, target: Path, data_dir: Path | None, restart_missing: bool) -> PresetInvocation:
        if not target.is_file():
            raise TuitrainError(
                f"{target}: no such run file or folder. Pass a run file (.json) or an invocation folder."
            )
        folder = target.parent
        check_writable(folder)
        with locked_for_checks(folder):
            record = read_record(target)
            _check_resumable(record, target, single=True)
            run = PresetRun(label=record.label, spec=record.spec)
            inv = cls(
                preset=_preset_named(record.preset or "resumed", record.label),
                runs=[run],
                runs_dir=folder.parent,
                data_dir=data_dir,
                invocation_id=record.invocation or folder.name,
                folder=folder,
                files=[target.name],
            )
            inv._continue(0, record, target, restart_missing)
        return inv

    @classmethod
    def _resume_folder(cls, folder: Path, data_dir: Path | None, restart_missing: bool) -> PresetInvocation:
        plan_path = folder / PLAN_FILE
        if not plan_path.is_file():
            raise TuitrainError(
                f"{folder}: not an invocation folder (no {PLAN_FILE}). Pass one of its run files to --resume instead."
            )
        try:
            plan = InvocationPlan.model_validate_json(plan_path.read_text(encoding="utf-8"))
        except ValidationError as exc:  # before ValueError, which it is: the first error says what is wrong
            first = first_error(exc)
            raise RecordError(f"{plan_path}: damaged invocation plan ({first.where}: {first.msg}).") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RecordError(f"{plan_path}: damaged invocation plan ({str(exc).splitlines()[0][:120]}).") from None
        check_writable(folder)
        with locked_for_checks(folder):
            inv = cls(
                preset=_preset_named(plan.preset, plan.title),
                runs=[PresetRun(r.label, r.spec) for r in plan.runs],
                runs_dir=folder.parent,
                data_dir=data_dir,
                invocation_id=plan.invocation,
                folder=folder,
                files=[r.file for r in plan.runs],
            )
            for index, name in enumerate(inv.files):
                path = folder / name
                if not path.exists():
                    trashed = folder.parent / TRASH_DIR / folder.name / name
                    if trashed.is_file():  # trashed by the user (tuitrain trash): left out, not trained again
                        inv.kept[index] = read_record(trashed, series=False)
                    continue  # else never started: trained from the start
                record = read_record(path)
                if effective_status(record) in RESUMABLE:
                    inv._continue(index, record, path, restart_missing)
                else:
                    _check_resumable(record, path, single=False)
                    inv.kept[index] = record
            if not inv.resuming and len(inv.kept) == len(inv.runs):
                raise TuitrainError(f"{folder}: every run has already ended; nothing to resume.")
        return inv

    def _continue(self, index: int, record: RunRecord, path: Path, restart_missing: bool) -> None:
        """Plan to continue run `index` from its checkpoint, or (restart_missing) from epoch 1 without one."""
        try:
            state = _checkpoint_for(path, record)
        except RecordError as exc:
            if not restart_missing:
                raise RecordError(
                    f"{exc} Put the checkpoint back, or add --restart-missing: {record.label} is then trained again "
                    f"from epoch 1 (its {len(record.epochs)} saved epoch(s) discarded)"
                    + (" and the other runs go on." if len(self.runs) > 1 else ".")
                ) from None
            record.restarts.append(RunRestart(reason=str(exc), epochs_discarded=len(record.epochs)))
            self.restarting.append(index)
            state = None
        self.resuming[index] = (record, state)

    def not_started(self) -> list[str]:
        return [r.label for i, r in enumerate(self.runs) if i not in self.started and i not in self.kept]


def resumed_text(record: RunRecord) -> str:
    """A resumed run's record for its worker: without the losses its series log holds (the worker appends to it)."""
    return record.model_dump_json(exclude={"batch_losses"} if record.series_file is not None else None)


def _ray_options(
    options: RayOptions, specs: list[RunSpec], cpus_per_run: float | None, gpus_per_run: float | None
) -> RayOptions:
    """`options` with the preset's resource keys where the command line gave none (then 1 CPU, no GPU); checks
    that Ray is installed and that runs asked to train on CUDA reserve a GPU."""
    from tuitrain.executors.ray import import_ray

    import_ray()
    options = with_resources(options, cpus_per_run, gpus_per_run)
    if not options.gpus_per_run and any(s.device == "cuda" for s in specs):
        raise TuitrainError(
            "device = cuda on Ray needs a GPU reserved for each run: set gpus_per_run (e.g. --gpus-per-run 1 or 0.5)."
        )
    return options


def check_ray_cluster(options: RayOptions) -> None:
    """Join the cluster and leave again: TuitrainError (one line) when it cannot be reached or hold a run."""
    from tuitrain.executors.ray import RayCluster

    cluster = RayCluster(options)
    cluster.connect()
    cluster.shutdown()


def _preset_named(name: str, title: str) -> Preset:
    try:
        return Preset(name=name, title=title or name)
    except ValidationError:
        return Preset(name="resumed", title=title or "resumed")


def _check_resumable(record: RunRecord, path: Path, *, single: bool) -> None:
    status = effective_status(record)
    if status == "running":
        raise TuitrainError(
            f"{path}: the run is still running (pid {record.env.pid} on {record.env.host}); stop it first."
        )
    if single and status not in RESUMABLE:
        raise TuitrainError(f"{path}: the run is {status}; only interrupted or crashed runs can be resumed.")


def _checkpoint_for(run_path: Path, record: RunRecord) -> dict | None:
    """The run's last checkpoint, checked now (before training); None if it never wrote one (it starts over).

    The checkpoint may be an epoch behind the run file (written in the background, it had not reached the disk when
    the process died): training continues from the checkpoint's own epoch end. The record names the checkpoint once
    the first one is on the disk, so epochs in a run file that names none were never checkpointed: nothing to lose."""
    path = checkpoint_path(run_path)
    checkpointed = bool(record.epochs) and record.checkpoint is not None
    if not path.exists():
        if checkpointed:
            raise RecordError(
                f"{path}: checkpoint missing, so {record.label} cannot continue from epoch {len(record.epochs) + 1}."
            )
        return None
    try:
        return load_checkpoint(path, record.id)
    except RecordError:
        if checkpointed:
            raise
        return None  # no checkpointed epoch to lose: it starts over (e.g. a restarted run killed before its first)


class PresetSource:
    """An EventSource that trains a prepared preset invocation in this process."""

    remote: RemoteControls | None = None

    def __init__(self, invocation: PresetInvocation) -> None:
        self.invocation = invocation
        self.control: RunControl | None = RunControl()
        preset = invocation.preset
        self.title = f"{preset.name}: {preset.title}"

    def run(self, sink: Sink) -> None:
        try:
            self.invocation.run(sink, self.control)
        finally:  # the app lives on after a preset ends or fails
            release_folder(self.invocation.folder)

    def stop(self) -> None:
        assert self.control is not None
        self.control.stop_all.set()

    def control_for(self, run_id: str) -> RunControl | None:
        return self.invocation.run_controls.get(run_id)

    def result_folder(self) -> Path | None:
        return self.invocation.folder
