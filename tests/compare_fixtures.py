"""Run records made by hand for the compare tests: their numbers are chosen, not trained."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tuitrain.core.spec import RunSpec
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, write_record

START = datetime(2025, 1, 2, 10, 0, tzinfo=timezone.utc)
STEPS = 10  # subset 640 / batch 64


def make_record(
    label: str,
    accuracies: Sequence[float],
    losses: Sequence[tuple[float, float, float]],
    *,
    status: str = "completed",
    planned_epochs: int | None = None,
    error: str | None = None,
    extra_losses: Sequence[float] = (),
    seconds_per_epoch: float = 30.0,
    test_total: int = 10000,
    preset: str = "fixture",
    invocation: str = "inv-1",
    device: str = "CPU",
    **spec,
) -> RunRecord:
    """A run whose epoch e has test accuracy accuracies[e] and (initial, final, mean) batch loss losses[e]."""
    spec = RunSpec(
        **{
            "model": "model_a",
            "subset": 640,
            "batch_size": 64,
            "device": "cpu",
            "epochs": planned_epochs or len(accuracies),
            **spec,
        }
    )
    batch_losses: list[float] = []
    epochs = []
    for n, (acc, (first, last, mean)) in enumerate(zip(accuracies, losses), start=1):
        steps = [first + (last - first) * i / (STEPS - 1) for i in range(STEPS)]
        batch_losses += steps
        epochs.append(
            EpochRecord(
                epoch=n,
                initial_loss=first,
                final_loss=last,
                mean_loss=mean,
                test_loss=mean,
                test_accuracy=acc,
                test_correct=round(acc * test_total / 100),
                test_total=test_total,
                duration_s=seconds_per_epoch,
                samples_per_s=640 / seconds_per_epoch,
            )
        )
    batch_losses += list(extra_losses)
    return RunRecord(
        id=f"{invocation}-{label}",
        label=label,
        status=status,
        preset=preset,
        invocation=invocation,
        spec=spec,
        env=EnvInfo(device=device, torch_version="2.0", threads=2, host="fixture-host", pid=1),
        started_at=START,
        heartbeat_at=START,
        ended_at=START + timedelta(seconds=seconds_per_epoch * len(epochs) + 1),
        batch_losses=batch_losses,
        epochs=epochs,
        error=error,
    )


LN10 = math.log(10)


def normal_pair() -> list[RunRecord]:
    return [
        make_record(
            "relu", [96.0, 97.5, 98.2], [(2.3, 0.3, 0.5), (0.3, 0.1, 0.15), (0.1, 0.05, 0.08)], activation="relu"
        ),
        make_record(
            "tanh",
            [97.2, 98.0, 98.6],
            [(2.3, 0.2, 0.4), (0.2, 0.08, 0.1), (0.08, 0.04, 0.06)],
            activation="tanh",
            seconds_per_epoch=50.0,
        ),
    ]


def chance_run() -> RunRecord:
    return make_record(
        "lr=0.1",
        [10.1, 11.35, 9.8],
        [(2.5, 2.31, 2.32), (2.30, 2.302, 2.3035), (2.301, 2.303, 2.3031)],
        lr=0.1,
        activation="relu",
    )


def diverged_run() -> RunRecord:
    return make_record(
        "lr=5",
        [40.0],
        [(2.3, 1.9, 2.0)],
        status="diverged",
        planned_epochs=3,
        lr=5.0,
        activation="relu",
        error="non-finite loss (nan) at epoch 2, batch 5",
        extra_losses=[1.8, 3.0, 9.0, 80.0, float("nan")],
    )


def interrupted_run() -> RunRecord:
    return make_record(
        "sigmoid",
        [91.0],
        [(2.3, 0.6, 1.1)],
        status="interrupted",
        planned_epochs=3,
        activation="sigmoid",
        extra_losses=[0.55, 0.5],
    )


def grid_runs() -> list[RunRecord]:
    acc = {("relu", 0.01): 97.9, ("relu", 0.001): 98.4, ("tanh", 0.01): 97.1, ("tanh", 0.001): 98.8}
    return [
        make_record(
            f"{act} lr={lr:g}",
            [a - 1.0, a],
            [(2.3, 0.2, 0.4), (0.2, 0.1, 0.12)],
            activation=act,
            lr=lr,
            invocation="inv-grid",
        )
        for (act, lr), a in acc.items()
    ]


def write_runs(folder: Path, records: Sequence[RunRecord]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, r in enumerate(records, start=1):
        path = folder / f"{i:02d}-{r.label.replace(' ', '_')}.json"
        write_record(r, path)
        paths.append(path)
    return paths


def seeded_runs(seeds: Sequence[int] = (0, 1, 2), invocation: str = "inv-seeds") -> list[RunRecord]:
    """Three activations, each trained once per seed: tanh ahead of relu, sigmoid well behind, with a spread
    of a few tenths of a point across seeds."""
    base = {"relu": 97.0, "tanh": 97.8, "sigmoid": 94.0}
    records = []
    for act, acc in base.items():
        for seed in seeds:
            wobble = (0.1, -0.15, 0.05, 0.2)[seed % 4]
            records.append(
                make_record(
                    f"activation={act}, seed={seed}",
                    [acc + wobble, acc + 0.8 - wobble, acc + 1.2 + wobble / 2],
                    [(2.3, 0.3 + wobble, 0.5), (0.3, 0.1, 0.15), (0.1, 0.05 + wobble / 10, 0.08)],
                    activation=act,
                    seed=seed,
                    invocation=invocation,
                    seconds_per_epoch=30.0 + seed,
                )
            )
    return records
