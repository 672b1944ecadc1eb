"""Benchmark: the epoch-end pause with the checkpoint written synchronously and in the background.

Usage (from the repository root):

    python benchmarks/checkpoint_writes.py [--data-dir DIR] [--model resnet18] [--device cpu]
                                           [--epochs 3] [--subset 1024] [--test-subset 256]
                                           [--limit-train-batches 8] [--folder DIR]

Trains the same run twice in this process with tuitrain.train.loop.fit, writing its checkpoint into `--folder` (a
real disk: the write is fsynced) at every epoch end: `sync` passes atomic_write_bytes as the checkpoint writer (a
writer given to fit writes in the training thread, as the worker path does), `background` leaves it to fit's
default (serialised and written in a background thread while the next epoch trains). For each epoch end it prints
the pause: from the end of the epoch's training to the start of the next epoch's (evaluation, the checkpoint's
snapshot, the run file, and with `sync` the serialisation and fsynced write), the evaluation's share of it, and the
next epoch's training time (with `background`, it shares the cores with the write). The last epoch's end is not
followed by an epoch: its wait for the pending write is in the run's end, shown in `run end`.

It is a benchmark, not a test: figures depend on the machine, its disk and what else runs on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=1024)
    parser.add_argument("--test-subset", type=int, default=256)
    parser.add_argument("--limit-train-batches", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None, help="where the checkpoints go (default: a temp folder)")
    args = parser.parse_args()

    import torch

    from tuitrain.core.atomic import atomic_write_bytes
    from tuitrain.core.spec import RunSpec
    from tuitrain.keeper import LocalRunFiles
    from tuitrain.train import loop
    from tuitrain.train.data import resolve_mnist
    from tuitrain.train.device import TensorData, describe_device, select_device

    arrays = resolve_mnist(args.data_dir, log=lambda _text: None)
    spec = RunSpec(
        model=args.model,
        device=args.device,
        epochs=args.epochs,
        batch_size=64,
        subset=args.subset,
        test_subset=args.test_subset,
        limit_train_batches=args.limit_train_batches,
        log_every=50,
    )
    device = select_device(spec.device)
    data = TensorData.from_arrays(arrays, device, spec.subset, spec.test_subset, spec.dataset)

    # the times each epoch's training starts and ends, from FitLoop.run_epoch
    marks: list[tuple[str, float]] = []
    run_epoch = loop.FitLoop.run_epoch

    def timed_run_epoch(self, epoch):
        marks.append(("start", time.perf_counter()))
        try:
            return run_epoch(self, epoch)
        finally:
            marks.append(("end", time.perf_counter()))

    loop.FitLoop.run_epoch = timed_run_epoch  # type: ignore[method-assign]

    def train(way: str, folder: Path) -> dict:
        marks.clear()
        run_file = folder / f"{way}.json"
        place = loop.RunPlace(run_file=run_file, checkpoint_file=run_file.with_suffix(".ckpt.pt"))
        started = time.perf_counter()
        record = loop.fit(
            spec,
            data=data,
            place=place,
            files=LocalRunFiles(run_file),
            write_checkpoint=atomic_write_bytes if way == "sync" else None,
        )
        finished = time.perf_counter()
        assert record.status == "completed", (record.status, record.error)
        starts = [t for kind, t in marks if kind == "start"]
        ends = [t for kind, t in marks if kind == "end"]
        return {
            "pauses": [s - e for e, s in zip(ends, starts[1:])],
            "evals": [e.eval_s for e in record.epochs],
            "trains": [e - s for s, e in zip(starts, ends)],
            "run_end": finished - ends[-1] - record.epochs[-1].eval_s,
            "total": finished - started,
            "checkpoint_mb": place.checkpoint_file.stat().st_size / 1e6,
            "batches": record.batches_per_epoch,
        }

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        results = {way: train(way, Path(tmp)) for way in ("sync", "background")}
    print(
        f"{spec.model} on {describe_device(device)} (torch threads {torch.get_num_threads()}), "
        f"{args.epochs} epochs of {results['sync']['batches']} batches of {spec.batch_size}, "
        f"{len(data.test_y)} test images"
    )
    print(f"checkpoint: {results['sync']['checkpoint_mb']:.0f} MB")
    print(f"{'writer':<11} {'epoch end':>9} {'pause s':>8} {'eval s':>7} {'pause-eval':>10} {'next train s':>12}")
    for way, r in results.items():
        for i, (pause, eval_s) in enumerate(zip(r["pauses"], r["evals"]), start=1):
            print(f"{way:<11} {i:>9} {pause:>8.3f} {eval_s:>7.3f} {pause - eval_s:>10.3f} {r['trains'][i]:>12.3f}")
        print(f"{way:<11} {'run end':>9} {r['run_end']:>8.3f} {'':>7} {'':>10} {'':>12}")
    print()
    for way, r in results.items():
        mean_pause = statistics.mean(p - e for p, e in zip(r["pauses"], r["evals"]))
        print(
            f"{way:<11} mean epoch-end pause less evaluation {mean_pause:.3f} s; run end (after the last evaluation) "
            f"{r['run_end']:.3f} s; whole run {r['total']:.1f} s"
        )


if __name__ == "__main__":
    main()
