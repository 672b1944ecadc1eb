"""Fused runs as a worker's job: several RunTasks trained as one fused group (fused.fit_fused), each task's
events, run file states, checkpoints and end sent as `train_task` sends them for a run alone (tuitrain.core.tasks).

`fusion_plan` says which of an invocation's runs fuse: on a CUDA device, fresh runs with one fusion key
(stacked.fusion_key) and at least FUSE_AT_LEAST of them; on the CPU none, because fusing was measured slower there
(benchmarks/fused_vs_alone.py on the 2-core dev CPU: 3 Model B runs fused 0.81x as fast as one after another, and a
probe before it 0.77x): the CPU keeps what its planner measures fastest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tuitrain.core.control import RunControl
from tuitrain.core.errors import RunFilesError, TuitrainError
from tuitrain.core.spec import RunSpec
from tuitrain.core.tasks import CheckpointSaved, RunTask, TaskDone, TaskEvent, TaskRefused, WorkerMessage
from tuitrain.train.checkpoint import checkpoint_path
from tuitrain.train.data import MnistArrays
from tuitrain.train.device import TensorData, select_device
from tuitrain.train.fused import FusedRun, fit_fused
from tuitrain.train.loop import RunPlace, new_record
from tuitrain.train.stacked import fusion_key
from tuitrain.train.worker import TaskFiles

FUSE_AT_LEAST = 2
"""Runs of one key that make a fused group; a lone run trains as today."""


def fusion_plan(specs: list[RunSpec], fresh: list[bool]) -> list[list[int]]:
    """Groups of run indices to train fused (each in the order given); runs in no group train alone. Only fresh runs
    (`fresh[i]`: not resumed) on a CUDA device fuse."""
    groups: dict[tuple, list[int]] = {}
    for i, (spec, new) in enumerate(zip(specs, fresh, strict=True)):
        key = fusion_key(spec)
        on_cuda = spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available())
        if key is None or not new or not on_cuda:
            continue
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) >= FUSE_AT_LEAST]


def train_fused_tasks(
    tasks: list[RunTask],
    arrays: MnistArrays,
    send: Callable[[WorkerMessage], None],
    controls: dict[int, RunControl],
    *,
    data: TensorData | None = None,
    write_files: bool = False,
    graphs: bool | None = None,
) -> None:
    """Train fresh `tasks` (one fusion key) as one fused group; every event, run file state, series log frame and
    checkpoint goes to `send` with its task's index (as `train_task` sends them), and a TaskDone for each at the end
    (TaskRefused for all when they cannot start here). `controls[task.index]`: each run's own controls (pausing or
    stopping one takes it out of the group). With
    `write_files` (a worker in the invoking process) the run files and checkpoints are written here, each
    RecordSaved says so, and a folder that cannot take them ends every run (TaskDone says why); without, writing is
    the receiver's. `data`: the tensors already on the device, else made from `arrays`."""
    try:
        first = tasks[0]
        assert all(t.record_text is None for t in tasks), "only fresh runs fuse"
        device = select_device(first.spec.device)
        if device.type == "cuda" and first.gpu is not None:
            torch.cuda.set_device(first.gpu)
        spec = first.spec
        if data is None:
            data = TensorData.from_arrays(arrays, device, spec.subset, spec.test_subset, spec.dataset)
        runs = [fused_run(task, device, send, controls[task.index], write_files) for task in tasks]
    except TuitrainError as exc:
        for task in tasks:
            send(TaskRefused(task.index, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - before training started (fit_fused records its own failures)
        for task in tasks:
            send(TaskRefused(task.index, f"{type(exc).__name__}: {exc}"))
        return
    files_error: str | None = None
    try:
        # not learnt from (estimate.learn_from_run): a fused run's epoch time is its group's, not its own
        fit_fused(runs, data=data, graphs=graphs)
    except RunFilesError as exc:  # where this worker writes the files: the runs ended, saved as far as they could be
        files_error = str(exc)
    finally:
        for run in runs:
            if run.files is not None:
                run.files.close()
    for task in tasks:
        send(TaskDone(task.index, files_error=files_error))


def fused_run(
    task: RunTask, device: torch.device, send: Callable[[WorkerMessage], None], control: RunControl, write_files: bool
) -> FusedRun:
    index = task.index

    def sink(event: Any) -> None:
        send(TaskEvent(index, event))

    record = new_record(
        task.spec, device, run_id=task.run_id, label=task.label, preset=task.preset, invocation=task.invocation
    )
    run_file = task.run_file
    place = RunPlace(index, task.run_count, run_file=run_file, checkpoint_file=checkpoint_path(run_file))
    write = None if write_files else (lambda _path, data: send(CheckpointSaved(index, data)))
    return FusedRun(task.spec, record, sink, control, TaskFiles(task, send, write_files), place, write)
