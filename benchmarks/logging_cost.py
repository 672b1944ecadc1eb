"""Logging cost per step: tuitrain beside the peers installed (wandb offline, TensorBoard's SummaryWriter, MLflow on
SQLite, trackio), one after another in this process, on this machine.

Usage (from the repository root):   python benchmarks/logging_cost.py [--seconds 3]

Each tool logs one scalar per step: a Python float, then a 0-d CPU tensor (what a training loop has), for about
`--seconds` (at least 200 steps) after 50 warm-up steps. Printed per tool: µs per step in the logging loop, and µs per
step counting the finish (what an asynchronous writer leaves to the end). A peer that is not installed is skipped
and said so. The ratios to tuitrain are the figures to read. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

WARM_UP = 50

Logger = tuple[Callable[[int, Any], None], Callable[[], None]]
"""log(step, value) and finish()."""


def tuitrain_logger(folder: Path, named: bool) -> Logger:
    import tuitrain

    run = tuitrain.init(label="bench", runs_dir=folder)
    if named:
        return (lambda step, value: run.log({"loss": value})), run.finish
    return (lambda step, value: run.log(value)), run.finish


def wandb_logger(folder: Path) -> Logger:
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    run = wandb.init(project="bench", dir=str(folder), settings=wandb.Settings(console="off"))
    return (lambda step, value: run.log({"loss": value})), run.finish


def tensorboard_logger(folder: Path) -> Logger:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    return (lambda step, value: writer.add_scalar("loss", value, step)), writer.close


def mlflow_logger(folder: Path) -> Logger:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_experiment("bench")
    mlflow.start_run()
    return (lambda step, value: mlflow.log_metric("loss", float(value), step=step)), mlflow.end_run


def trackio_logger(folder: Path) -> Logger:
    os.environ["TRACKIO_DIR"] = str(folder)
    os.environ["HF_HOME"] = str(folder)
    import trackio

    trackio.init(project="bench")
    return (lambda step, value: trackio.log({"loss": float(value)})), trackio.finish


PEERS: dict[str, Callable[[Path], Logger]] = {
    "tuitrain run.log(loss)": lambda folder: tuitrain_logger(folder, named=False),
    'tuitrain run.log({"loss": loss})': lambda folder: tuitrain_logger(folder, named=True),
    "wandb (offline)": wandb_logger,
    "TensorBoard SummaryWriter": tensorboard_logger,
    "MLflow (SQLite)": mlflow_logger,
    "trackio": trackio_logger,
}


def measure(make: Callable[[Path], Logger], value_of: Callable[[int], Any], seconds: float) -> tuple[float, float, int]:
    """µs per step in the loop, µs per step with the finish, steps."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        log, finish = make(Path(tmp))
        for step in range(WARM_UP):
            log(step, value_of(step))
        values = [value_of(i) for i in range(1000)]  # made before timing: the tool's cost only
        steps, start = WARM_UP, time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline or steps < WARM_UP + 200:
            for value in values[:100]:
                log(steps, value)
                steps += 1
        loop = time.perf_counter() - start
        finish()
        total = time.perf_counter() - start
    n = steps - WARM_UP
    return loop / n * 1e6, total / n * 1e6, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", help="tools to measure (names as printed; default all)")
    args = parser.parse_args()
    kinds = {"float": lambda i: 1.0 / (i + 1), "0-d tensor": lambda i: torch.tensor(1.0 / (i + 1))}
    print(f"{'tool':34} {'value':11} {'µs/step loop':>13} {'µs/step +finish':>16} {'steps':>9}")
    results: dict[tuple[str, str], float] = {}
    for name, make in PEERS.items():
        if args.only and name not in args.only:
            continue
        for kind, value_of in kinds.items():
            try:
                loop, total, n = measure(make, value_of, args.seconds)
            except ImportError as exc:
                print(f"{name:34} not installed ({exc.name})")
                break
            except Exception as exc:  # noqa: BLE001 - a peer that fails here is reported, the others still measured
                print(f"{name:34} {kind:11} failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            results[(name, kind)] = total
            print(f"{name:34} {kind:11} {loop:13.2f} {total:16.2f} {n:9,}", flush=True)
    base = {kind: results.get(("tuitrain run.log(loss)", kind)) for kind in kinds}
    print("\nratio to tuitrain run.log(loss), with the finish:")
    for (name, kind), total in results.items():
        if base[kind]:
            print(f"  {name:34} {kind:11} {total / base[kind]:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
