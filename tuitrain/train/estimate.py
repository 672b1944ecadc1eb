"""Time estimates from measured throughput: a short calibration per device and model, cached.

Calibration runs the real training loop (`fit`, with its threads, layout, optimizer and loss
read-backs) on random in-memory data of the run's batch size, times the steps after a warm-up
from the loop's own progress events, and times evaluation in the loop's evaluation batches. A
run's estimate adds per-epoch evaluation of the test set and the one-off cost of preparing the
data. Results are cached in the user's cache folder, keyed by device (on the CPU, with the threads
the runs train with), torch version, model, activation, batch size and optimizer.

A completed run's own figures then refine the cached ones: weighted by the samples each measured,
combined with what was cached rather than replacing it, and only from epochs long enough to time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable

import torch

from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.cache import cache_dir
from tuitrain.core.control import RunControl
from tuitrain.core.cores import CALIBRATION_LABEL, cpu_lease, free_threads, machine_cores
from tuitrain.core.devices import cpu_device
from tuitrain.core.events import BatchLosses
from tuitrain.core.spec import RunSpec
from tuitrain.records import RunRecord
from tuitrain.train.device import TensorData, cpu_threads, prepare_model, select_device
from tuitrain.train.loop import eval_batch, evaluate, fit

CALIBRATION_VERSION = 3  # bump when what is measured changes: older cache entries are measured again
READ_EVERY = {"model_a": 10, "model_b": 10}  # steps between the loop's read-backs; 1 for big models (seconds a step)
WARMUP_S = 0.25  # untimed first steps: allocator, kernel selection, caches
TIMED_S = 1.0  # then timed for about this long (at least two read-backs)
MAX_CALIBRATION_S = 6.0
SETUP_S = 1.5  # reading and normalising MNIST once per preset (measured about 1-1.5 s on the dev CPU)
# A run's epoch refines the figures only if it trained at least this many samples for at least this long:
# a one-image epoch times the loop's fixed costs, not its throughput.
MIN_EPOCH_SAMPLES = 1024
MIN_EPOCH_TRAIN_S = 0.5
MIN_EVAL_SAMPLES = 1000
CALIBRATION_WEIGHT = 20_000
"""Samples a calibration counts as: a single full-size run (60,000 per epoch) outweighs it."""
MEMORY_SAMPLES = 600_000
"""At most this many samples of earlier figures are kept in the weighting, so the figures follow a changed machine."""


def _cache_path():
    return cache_dir() / "calibration.json"


def _load_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def planned_threads(device: torch.device) -> int | None:
    """The threads a run on the CPU starts with: TUITRAIN_CPU_THREADS, else torch's default less the cores that
    other programs keep busy now (a core lease leaves those to them); None on a GPU."""
    if device.type == "cuda":
        return None
    defaults = RunSpec()  # type: ignore[call-arg]  # mypy misses the defaults given as Field(default, ...)
    return cpu_threads(defaults, device) or free_threads(torch.get_num_threads())


def planned_device(device: torch.device) -> str:
    """The device as a run on it will name it: on the CPU, with the threads it will train with (planned_threads)."""
    return device_name(device, planned_threads(device))


def device_name(device: torch.device, threads: int | None) -> str:
    """The device as runs on it name it: the GPU's name, or the CPU with `threads` threads."""
    return torch.cuda.get_device_name(device) if threads is None else cpu_device(threads)


def _key(spec: RunSpec, device_name: str, torch_version: str = torch.__version__) -> str:
    activation = spec.activation if spec.model in ("model_a", "model_b") else "-"
    return (
        f"v{CALIBRATION_VERSION}|{device_name}|torch {torch_version}|{spec.model}|{activation}"
        f"|{spec.batch_size}|{spec.optimizer}"
    )


def _random_data(train: int, test: int, device: torch.device) -> TensorData:
    gen = torch.Generator().manual_seed(0)
    return TensorData(
        torch.randn(train, 1, 28, 28, generator=gen).to(device),
        torch.randint(0, 10, (train,), generator=gen).to(device),
        torch.randn(test, 1, 28, 28, generator=gen).to(device),
        torch.randint(0, 10, (test,), generator=gen).to(device),
        "random (calibration)",
    )


def measure(spec: RunSpec, device: torch.device) -> dict:
    """Measure training and evaluation samples/s for this spec's model, optimizer and batch size on `device`."""
    bs = spec.batch_size
    steps = max(20, min(500, 32000 // bs))  # about a second of a small model; the clock stops big ones sooner
    data = _random_data(bs * steps, eval_batch(device), device)
    control = RunControl()
    marks: list[tuple[float, int]] = []  # (elapsed_s, samples_done) at each read-back after the warm-up
    last = [(0.0, 0)]

    def on_event(event) -> None:
        if not isinstance(event, BatchLosses):
            return
        last[0] = (event.elapsed_s, event.samples_done)
        if event.elapsed_s >= WARMUP_S or marks:
            marks.append((event.elapsed_s, event.samples_done))
        if (len(marks) >= 3 and marks[-1][0] - marks[0][0] >= TIMED_S) or event.elapsed_s > MAX_CALIBRATION_S:
            control.stop_run.set()

    run = spec.model_copy(
        update={
            "device": device.type,
            "epochs": 1,
            "subset": None,
            "test_subset": None,
            "limit_train_batches": None,
            "log_every": READ_EVERY.get(spec.model, 1),
            "on_divergence": "continue",
        }
    )
    fit(run, on_event, control, data=data)
    if len(marks) < 2:  # a model so slow that the warm-up took everything: time all the steps
        marks = [(0.0, 0), last[0]]
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    train_sps = (s1 - s0) / max(t1 - t0, 1e-9)

    # evaluation as the loop does it, with the loop's threads: one warm-up pass, one timed
    previous = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(spec, device) or previous)
    try:
        torch.manual_seed(0)
        model = prepare_model(spec, device)
        evaluate(model, data.test_x, data.test_y)
        start = time.perf_counter()
        evaluate(model, data.test_x, data.test_y)
        eval_sps = data.test_x.shape[0] / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {"train_samples_per_s": train_sps, "eval_samples_per_s": eval_sps, "measured_at": time.time()}


def _save_cache(cache: dict) -> None:
    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_cache_path(), json.dumps(cache, indent=1))
    except OSError:
        pass  # an estimate is a convenience: never fail for its cache


def _combined(old: float | None, old_weight: float, new: float, new_weight: float) -> float:
    """Throughput over both measurements: all their samples over all their seconds."""
    if old is None or old <= 0 or old_weight <= 0:
        return new
    return (old_weight + new_weight) / (old_weight / old + new_weight / new)


def learn_from_run(record: RunRecord) -> None:
    """Refine the cached throughput of this run's model on its device with what the run itself measured.

    A calibration takes about a second and is as noisy as the machine at that moment; a completed run's
    epochs measure more. They are combined with the cached figures (weighted by samples, older samples
    capped at MEMORY_SAMPLES), so one short run on a busy machine moves the estimate a little, not all
    the way; epochs too short to time (a --subset 1 run) are left out. The figures are filed under the
    threads the run trained with (env.threads), not the threads this process would use; epochs that trained
    with other counts (the machine's cores were shared anew mid-run) are left out.
    """
    if record.status != "completed":
        return
    device = select_device(record.spec.device)
    if (device.type == "cuda") != (record.env.device_type == "cuda"):
        return  # trained elsewhere (a resumed or copied run): its figures say nothing of this device
    train_size = record.train_size or record.spec.train_size()
    epochs = [e for e in record.epochs if e.threads in ([], [record.env.threads])]  # [] in older files
    timed = [
        e
        for e in epochs
        if e.samples_per_s > 0 and train_size >= MIN_EPOCH_SAMPLES and train_size / e.samples_per_s >= MIN_EPOCH_TRAIN_S
    ]
    evaluated = [e for e in epochs if e.eval_s > 0 and e.test_total >= MIN_EVAL_SAMPLES]
    if not timed and not evaluated:
        return
    device_name = record.env.device if device.type == "cuda" else cpu_device(record.env.threads)
    key = _key(record.spec, device_name, record.env.torch_version)
    cache = _load_cache()
    old = cache.get(key) or {}
    entry = dict(old)
    if timed:
        samples = train_size * len(timed)
        rate = samples / sum(train_size / e.samples_per_s for e in timed)
        weight = (
            min(old.get("train_samples", CALIBRATION_WEIGHT), MEMORY_SAMPLES) if "train_samples_per_s" in old else 0
        )
        entry["train_samples_per_s"] = _combined(old.get("train_samples_per_s"), weight, rate, samples)
        entry["train_samples"] = weight + samples
    if evaluated:
        samples = sum(e.test_total for e in evaluated)
        rate = samples / sum(e.eval_s for e in evaluated)
        weight = min(old.get("eval_samples", CALIBRATION_WEIGHT), MEMORY_SAMPLES) if "eval_samples_per_s" in old else 0
        entry["eval_samples_per_s"] = _combined(old.get("eval_samples_per_s"), weight, rate, samples)
        entry["eval_samples"] = weight + samples
    if "train_samples_per_s" not in entry or "eval_samples_per_s" not in entry:
        return  # half a figure estimates nothing: wait for a calibration or a longer run
    entry.update(measured_at=time.time(), source=f"run {record.id}")
    cache[key] = entry
    _save_cache(cache)


def throughput(spec: RunSpec, *, calibrate: bool = True) -> dict | None:
    """Cached throughput for this spec on its device (on the CPU, with the threads it would train with now);
    measured now if missing and `calibrate`."""
    device = select_device(spec.device)
    threads = planned_threads(device)
    cache = _load_cache()
    key = _key(spec, device_name(device, threads))
    if key in cache:
        return cache[key]
    if not calibrate:
        return None
    figures = calibrated(spec, device, threads)
    if figures is None:
        return None
    cache[key] = figures
    _save_cache(cache)
    return figures


def calibrated(spec: RunSpec, device: torch.device, threads: int | None) -> dict | None:
    """`measure()` where it can time the run alone, with `threads` on the CPU; else None (nothing measured, or
    nothing kept): on the CPU it holds a core lease that no other run shares, and other programs may not have kept
    busy the cores it times with meanwhile (either would halve what it measures, or worse, and the figure would
    stay in the cache)."""
    lease = cpu_lease(device.type, label=CALIBRATION_LABEL)
    if lease is not None and not lease.acquire_if_alone():
        return None
    other_work = lease.other_work if lease is not None else None

    def crowded() -> bool:
        return threads is not None and other_work is not None and other_work.busy_cores() > machine_cores() - threads

    previous = torch.get_num_threads()
    try:
        if crowded():
            return None
        torch.set_num_threads(threads or previous)
        figures = measure(spec, device)
        return None if crowded() else figures
    finally:
        torch.set_num_threads(previous)
        if lease is not None:
            lease.release()


def run_seconds(spec: RunSpec, *, calibrate: bool = True) -> float | None:
    """Estimated wall time of a whole run (training + per-epoch evaluation)."""
    tp = throughput(spec, calibrate=calibrate)
    return None if tp is None else _seconds_at(spec, tp)


def _seconds_at(spec: RunSpec, tp: dict) -> float:
    per_epoch = spec.train_size() / tp["train_samples_per_s"] + spec.test_size() / tp["eval_samples_per_s"]
    return per_epoch * spec.epochs


def crowded_seconds(specs: Iterable[RunSpec]) -> float:
    """Estimated wall time of these runs one after another, also where a model cannot be timed alone (other runs or
    programs keep the cores busy): its figure is then measured now, beside that work, and not cached. Such a figure
    errs slow, so the time errs long: enough to decide whether to ask before hours of training, not to list."""
    total = 0.0
    for spec in specs:
        tp = throughput(spec, calibrate=True)
        if tp is None:
            device = select_device(spec.device)
            previous = torch.get_num_threads()
            try:
                torch.set_num_threads(planned_threads(device) or previous)
                tp = measure(spec, device)
            finally:
                torch.set_num_threads(previous)
        total += _seconds_at(spec, tp)
    return total


def preset_seconds(specs: Iterable[RunSpec], *, calibrate: bool = True) -> float | None:
    """Estimated wall time of a whole preset: its runs plus preparing the data once."""
    runs = total_seconds(specs, calibrate=calibrate)
    return None if runs is None else runs + SETUP_S


WORKER_START_S = 3.0
"""Starting a worker process for parallel runs: Python and torch imports (about 2.7 s measured on the dev CPU),
partly hidden behind preparing the data."""
SHARING_GAIN = {"cpu": 0.35, "cuda": 0.5}
"""A run sharing its device with k-1 others trains at (1/k) ** gain of its speed alone. On the 2-core dev CPU
one thread trained Model B at about 0.78x the speed of two (9.5k vs 12.1k samples/s), and two single-thread
processes together 1.6x one two-thread process: gain 0.35. The GPU figure is a guess (not measured): small
runs leave most of a GPU idle, so sharing costs each run less than half its speed."""


def parallel_seconds(specs: Iterable[RunSpec], jobs: int, *, calibrate: bool = True, devices: int = 1) -> float | None:
    """Estimated wall time of runs trained up to `jobs` at a time, spread over `devices` GPUs or one CPU: the runs
    start in order as slots free; runs sharing a device slow each other (SHARING_GAIN). Preparing the data and
    starting the workers are counted once. None when a figure is missing and `calibrate` is off."""
    specs = list(specs)
    solo = [run_seconds(s, calibrate=calibrate) for s in specs]
    if any(t is None or math.isnan(t) for t in solo):
        return None
    if jobs <= 1 or len(specs) <= 1:
        return sum(t for t in solo if t is not None) + SETUP_S
    kind = "cuda" if any(select_device(s.device).type == "cuda" for s in specs) else "cpu"
    gain = SHARING_GAIN[kind]
    remaining = [t for t in solo if t is not None]
    waiting = list(range(len(remaining)))
    running: list[int] = []
    clock = max(SETUP_S, WORKER_START_S)
    while waiting or running:
        while waiting and len(running) < jobs:
            running.append(waiting.pop(0))
        per_device = max(1.0, len(running) / max(devices, 1))
        rate = (1.0 / per_device) ** gain  # solo-seconds of work done per second by each running run
        step = min(remaining[i] for i in running) / rate
        clock += step
        for i in running:
            remaining[i] -= step * rate
        running = [i for i in running if remaining[i] > 1e-9]
    return clock


def total_seconds(specs: Iterable[RunSpec], *, calibrate: bool = True) -> float | None:
    total = 0.0
    for spec in specs:
        s = run_seconds(spec, calibrate=calibrate)
        if s is None or math.isnan(s):
            return None
        total += s
    return total
