"""Fused runs against the same runs trained alone: their batch losses side by side, and the time each way.

    python benchmarks/fused_vs_alone.py [--data-dir DIR] [--device cpu|cuda] [--sweep lr_sweep|seeds]
                                        [--epochs 1] [--subset N] [--stop-after BATCHES]

lr_sweep: Model B, Adam, lr 0.1 / 0.01 / 0.001 (seed 0); seeds: Model B, Adam lr 0.001, seeds 0-7. In one process
(data on the device once): each run trained alone by `fit`, one after another, then all of them as one fused group
(`fit_fused`; on CUDA both through CUDA graphs); with --stop-after, the second run of the group is stopped after that
many batches (it leaves the group, the rest go on). Prints per run the largest absolute and relative difference of its
batch losses (fused minus alone, over the batches both trained), the last loss and test accuracy each way, then the
training time of the runs alone (sum of their epochs' durations) and fused (the group's wall, from its first step to
its last run's end), and their ratio. The test suite's tolerance (tests/engine/test_fused.py) is rtol 1e-3, atol 1e-4.
A benchmark, not a test: times depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tuitrain.core.control import RunControl  # noqa: E402
from tuitrain.core.events import BatchLosses  # noqa: E402
from tuitrain.core.spec import RunSpec  # noqa: E402
from tuitrain.train.data import resolve_mnist  # noqa: E402
from tuitrain.train.device import TensorData  # noqa: E402
from tuitrain.train.fused import FusedRun, fit_fused  # noqa: E402
from tuitrain.train.loop import RunPlace, fit, new_record  # noqa: E402

SWEEPS = {
    "lr_sweep": [(lr, 0) for lr in (0.1, 0.01, 0.001)],
    "seeds": [(0.001, seed) for seed in range(8)],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="lr_sweep")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--stop-after", type=int, default=None, help="stop the group's second run after N batches")
    args = parser.parse_args()
    device = torch.device(args.device)
    arrays = resolve_mnist(args.data_dir, log=lambda _t: None)
    data = TensorData.from_arrays(arrays, device, args.subset)
    specs = [
        RunSpec(model="model_b", lr=lr, seed=seed, epochs=args.epochs, subset=args.subset, device=args.device)
        for lr, seed in SWEEPS[args.sweep]
    ]
    alone = [fit(spec, data=data, cores=None) for spec in specs]
    alone_s = sum(e.duration_s for r in alone for e in r.epochs)

    runs = []
    for i, spec in enumerate(specs):
        record = new_record(spec, device, run_id=f"fused-{i}", label=f"lr={spec.lr} seed={spec.seed}")
        runs.append(FusedRun(spec, record, place=RunPlace(run_index=i, run_count=len(specs))))
    if args.stop_after is not None and len(runs) > 1:
        control, limit = RunControl(), args.stop_after

        def stop(event) -> None:
            if isinstance(event, BatchLosses) and event.first_step + len(event.losses) >= limit:
                control.stop_run.set()

        runs[1].control, runs[1].sink = control, stop
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fused = fit_fused(runs, data=data)
    fused_s = time.perf_counter() - start

    print(f"{args.sweep} on {args.device}: {len(specs)} runs x {args.epochs} epoch(s), {data.train_x.shape[0]} images")
    print(
        f"{'run':<18}{'status':<13}{'steps':>6}{'max |d|':>11}{'max rel':>10}{'last alone':>12}{'last fused':>12}"
        f"{'acc alone':>10}{'acc fused':>10}"
    )
    for a, f in zip(alone, fused, strict=True):
        n = min(len(a.batch_losses), len(f.batch_losses))
        x, y = torch.tensor(a.batch_losses[:n]), torch.tensor(f.batch_losses[:n])
        diff = (y - x).abs()
        finite = torch.isfinite(diff)
        worst = float(diff[finite].max()) if finite.any() else float("nan")
        rel = float((diff[finite] / x[finite].abs().clamp_min(1e-12)).max()) if finite.any() else float("nan")
        acc_a = f"{a.epochs[-1].test_accuracy:.2f}" if a.epochs else "-"
        acc_f = f"{f.epochs[-1].test_accuracy:.2f}" if f.epochs else "-"
        print(
            f"{f.label:<18}{f.status:<13}{n:>6}{worst:>11.2e}{rel:>10.2e}{x[-1].item():>12.5f}{y[-1].item():>12.5f}"
            f"{acc_a:>10}{acc_f:>10}"
        )
    print(
        f"training alone, one after another: {alone_s:.2f} s; fused: {fused_s:.2f} s; "
        f"fused is {alone_s / fused_s:.2f}x as fast"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
