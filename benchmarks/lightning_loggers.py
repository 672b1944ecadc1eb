"""Benchmark: a Lightning run's training time with tuitrain's logger, Lightning's CSVLogger and its
TensorBoardLogger, side by side, in one invocation (wall time, and the process's CPU time: steadier on a busy machine).

Usage (from the repository root):

    python benchmarks/lightning_loggers.py [--steps 2000] [--rounds 3] [--log-every 1]

The same tiny model (a linear layer on 8 features, batch 16: the step costs little, so what a logger costs shows)
trains --steps optimizer steps on a CPU with each logger, logging the loss and an accuracy every --log-every
steps (1: every step, the most a logger can be asked; Lightning's default is 50). The loggers take turns, --rounds
times, so that what else the machine runs meanwhile falls on all of them alike; each one's median time is printed,
and its ratio to the CSVLogger's (the issue's target: tuitrain within 1.05x of CSV, and no slower than
TensorBoard).

It is a benchmark, not a test: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tuitrain.integrations.lightning import TuitrainLogger  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


_fsync = os.fsync
fsync_waits: list[float] = []
"""Seconds spent in each os.fsync (tuitrain's run file is written atomically: fsynced), counted to show what the
wall time spends waiting for the disk."""


def timed_fsync(fd: int) -> None:
    began = time.perf_counter()
    _fsync(fd)
    fsync_waits.append(time.perf_counter() - began)


def train(logger, steps: int, log_every: int, data: DataLoader) -> tuple[float, float]:
    """Wall and CPU seconds of one fit."""
    trainer = L.Trainer(
        max_steps=steps,
        logger=logger,
        log_every_n_steps=log_every,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.manual_seed(0)
    model = Tiny()
    began, cpu = time.perf_counter(), time.process_time()
    trainer.fit(model, data)
    return time.perf_counter() - began, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16 * 500, 8, generator=g)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16, shuffle=True)
    loggers = {
        "csv": lambda d: L.pytorch.loggers.CSVLogger(d),
        "tensorboard": lambda d: L.pytorch.loggers.TensorBoardLogger(d),
        "tuitrain": lambda d: TuitrainLogger(runs_dir=d),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in loggers}
    fsyncs: dict[str, list[float]] = {name: [] for name in loggers}
    os.fsync = timed_fsync
    with tempfile.TemporaryDirectory() as tmp:
        train(False, 200, args.log_every, data)  # warm-up: imports, first allocations
        for round_ in range(args.rounds):
            for name, make in loggers.items():
                fsync_waits.clear()
                times[name].append(train(make(f"{tmp}/{name}-{round_}"), args.steps, args.log_every, data))
                fsyncs[name].extend(fsync_waits)
    csv = statistics.median(w for w, _ in times["csv"])
    csv_cpu = statistics.median(c for _, c in times["csv"])
    print(f"Lightning, {args.steps} steps, logging every {args.log_every} step(s), {args.rounds} rounds (median):")
    for name, values in times.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        spread = ", ".join(f"{w:.2f}" for w, _ in values)
        print(
            f"  {name:<12} wall {wall:6.2f} s ({spread}) {wall / csv:5.3f}x CSVLogger | "
            f"CPU {cpu:6.2f} s {cpu / csv_cpu:5.3f}x CSVLogger | "
            f"{len(fsyncs[name]) / args.rounds:.0f} fsyncs per run, {sum(fsyncs[name]) / args.rounds:.2f} s"
        )


if __name__ == "__main__":
    main()
