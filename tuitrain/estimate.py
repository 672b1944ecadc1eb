"""Time estimates from measured throughput: a short calibration per device and model, cached.

Calibration trains a fresh model for a few steps on random data of the run's batch size (after
warm-up steps) and times evaluation batches, on the device the run would use. Results are cached
in the user's cache folder, keyed by device, torch version, model, activation and batch size.
"""

from __future__ import annotations

import json
import math
import time
from typing import Iterable, Optional

import torch
from torch import nn

from tuitrain.records import atomic_write_text
from tuitrain.train.data import cache_dir
from tuitrain.train.loop import describe_device, eval_batch, make_optimizer, prepare_model, select_device
from tuitrain.train.spec import RunSpec

MNIST_TRAIN = 60000
MNIST_TEST = 10000
WARMUP_STEPS = 3
TIMED_STEPS = 10


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
    return f"{describe_device(device)}|torch {torch.__version__}|{spec.model}|{activation}|{spec.batch_size}|{spec.optimizer}"


def measure(spec: RunSpec, device: torch.device) -> dict:
    """Measure training samples/s and evaluation samples/s for this spec's model on `device`."""
    torch.manual_seed(0)
    model = prepare_model(spec, device)
    optimizer = make_optimizer(spec, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(spec.batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (spec.batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    steps = 0
    while steps < TIMED_STEPS or time.perf_counter() - start < 0.3:
        step()
        steps += 1
        if time.perf_counter() - start > 3.0:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_sps = steps * spec.batch_size / (time.perf_counter() - start)
    model.eval()
    xe = torch.randn(eval_batch(device), 1, 28, 28, device=device)
    with torch.inference_mode():
        model(xe)
        start = time.perf_counter()
        model(xe)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    eval_sps = eval_batch(device) / (time.perf_counter() - start)
    return {"train_samples_per_s": train_sps, "eval_samples_per_s": eval_sps, "measured_at": time.time()}


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
    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_cache_path(), json.dumps(cache, indent=1))
    except OSError:
        pass  # an estimate is a convenience: never fail for its cache
    return cache[key]


def run_seconds(spec: RunSpec, *, calibrate: bool = True) -> Optional[float]:
    """Estimated wall time of a whole run (training + per-epoch evaluation)."""
    tp = throughput(spec, calibrate=calibrate)
    if tp is None:
        return None
    train = min(spec.subset or MNIST_TRAIN, MNIST_TRAIN)
    if spec.limit_train_batches:
        train = min(train, spec.limit_train_batches * spec.batch_size)
    test = min(spec.test_subset or MNIST_TEST, MNIST_TEST)
    per_epoch = train / tp["train_samples_per_s"] + test / tp["eval_samples_per_s"]
    return per_epoch * spec.epochs


def total_seconds(specs: Iterable[RunSpec], *, calibrate: bool = True) -> Optional[float]:
    total = 0.0
    for spec in specs:
        s = run_seconds(spec, calibrate=calibrate)
        if s is None or math.isnan(s):
            return None
        total += s
    return total
