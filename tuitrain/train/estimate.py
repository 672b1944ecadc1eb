"""Time estimates from measured throughput: a short calibration per device and model, cached.

Calibration runs the real training loop (`fit`, with its threads, layout, optimizer and loss
read-backs) on random in-memory data of the run's batch size, times the steps after a warm-up
from the loop's own progress events, and times evaluation in the loop's evaluation batches. A
run's estimate adds per-epoch evaluation of the test set and the one-off cost of preparing the
data. Results are cached in the user's cache folder, keyed by device, torch version, model,
activation, batch size and optimizer.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Iterable, Optional

import torch

from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.events import BatchLosses
from tuitrain.core.spec import RunSpec
from tuitrain.records import RunRecord
from tuitrain.train.data import cache_dir
from tuitrain.train.loop import (
    RunControl,
    TensorData,
    cpu_threads,
    describe_device,
    eval_batch,
    evaluate,
    fit,
    prepare_model,
    select_device,
)

CALIBRATION_VERSION = 2  # bump when what is measured changes: older cache entries are measured again
READ_EVERY = {"model_a": 10, "model_b": 10}  # steps between the loop's read-backs; 1 for big models (seconds a step)
WARMUP_S = 0.25  # untimed first steps: allocator, kernel selection, caches
TIMED_S = 1.0  # then timed for about this long (at least two read-backs)
MAX_CALIBRATION_S = 6.0
SETUP_S = 1.5  # reading and normalising MNIST once per preset (measured about 1-1.5 s on the dev CPU)


def _cache_path():
    return cache_dir() / "calibration.json"


def _load_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _key(spec: RunSpec, device: torch.device) -> str:
    activation = spec.activation if spec.model in ("model_a", "model_b") else "-"
    return (
        f"v{CALIBRATION_VERSION}|{describe_device(device)}|torch {torch.__version__}|{spec.model}|{activation}"
        f"|{spec.batch_size}|{spec.optimizer}"
    )


def _random_data(train: int, test: int, device: torch.device) -> TensorData:
    gen = torch.Generator().manual_seed(0)
    return TensorData(
        torch.randn(train, 1, 28, 28, generator=gen).to(device), torch.randint(0, 10, (train,), generator=gen).to(device),
        torch.randn(test, 1, 28, 28, generator=gen).to(device), torch.randint(0, 10, (test,), generator=gen).to(device),
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

    run = spec.model_copy(update={
        "device": device.type, "epochs": 1, "subset": None, "test_subset": None, "limit_train_batches": None,
        "log_every": READ_EVERY.get(spec.model, 1), "on_divergence": "continue",
    })
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


def learn_from_run(record: RunRecord) -> None:
    """Replace the cached throughput of this run's model on its device by what the run itself measured.

    A calibration takes about a second and is as noisy as the machine at that moment; a completed run's
    per-epoch figures are the best measurement there is, so later estimates use them.
    """
    epochs = [e for e in record.epochs if e.samples_per_s > 0 and e.eval_s > 0]
    if record.status != "completed" or not epochs:
        return
    device = select_device(record.spec.device)
    if (device.type == "cuda") != (record.env.device_type == "cuda"):
        return  # trained elsewhere (a resumed or copied run): its figures say nothing of this device
    cache = _load_cache()
    cache[_key(record.spec, device)] = {
        "train_samples_per_s": statistics.median(e.samples_per_s for e in epochs),
        "eval_samples_per_s": statistics.median(e.test_total / e.eval_s for e in epochs),
        "measured_at": time.time(),
        "source": f"run {record.id}",
    }
    _save_cache(cache)


def throughput(spec: RunSpec, *, calibrate: bool = True) -> Optional[dict]:
    """Cached throughput for this spec on its device; measured now if missing and `calibrate`."""
    device = select_device(spec.device)
    cache = _load_cache()
    key = _key(spec, device)
    if key in cache:
        return cache[key]
    if not calibrate:
        return None
    cache[key] = measure(spec, device)
    _save_cache(cache)
    return cache[key]


def run_seconds(spec: RunSpec, *, calibrate: bool = True) -> Optional[float]:
    """Estimated wall time of a whole run (training + per-epoch evaluation)."""
    tp = throughput(spec, calibrate=calibrate)
    if tp is None:
        return None
    per_epoch = spec.train_size() / tp["train_samples_per_s"] + spec.test_size() / tp["eval_samples_per_s"]
    return per_epoch * spec.epochs


def preset_seconds(specs: Iterable[RunSpec], *, calibrate: bool = True) -> Optional[float]:
    """Estimated wall time of a whole preset: its runs plus preparing the data once."""
    runs = total_seconds(specs, calibrate=calibrate)
    return None if runs is None else runs + SETUP_S


def total_seconds(specs: Iterable[RunSpec], *, calibrate: bool = True) -> Optional[float]:
    total = 0.0
    for spec in specs:
        s = run_seconds(spec, calibrate=calibrate)
        if s is None or math.isnan(s):
            return None
        total += s
    return total
