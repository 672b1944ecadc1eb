"""Benchmark of the training step on a GPU: captured (CUDA graph) vs eager, fp32 vs bf16, channels-last on vs off,
and with the GPU panel's sampler running vs not, for ResNet18 and AlexNet at batch 64 on real MNIST.

Usage (from the repository root, on a CUDA machine):   python benchmarks/bench_step.py --data-dir DIR [--seconds 2]

Each line trains the same model from the same seed for about `--seconds` after 30 warm-up steps (cuDNN autotuning
on, as in fit) and prints training samples/s, measured between two device syncs. Same process, same GPU, one after
another: the ratios are the figures to read. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch
from torch import nn

from tuitrain.core.spec import RunSpec
from tuitrain.gpu import GpuSampler
from tuitrain.train import device
from tuitrain.train.cuda_step import make_step
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData, prepare_model
from tuitrain.train.optim import make_optimizer


def samples_per_s(data, model_name, *, graph, precision="fp32", channels_last=True, sampler=False, seconds=2.0):
    torch.manual_seed(0)
    spec = RunSpec(model=model_name, batch_size=64, device="cuda")
    keep = device.CUDA_CHANNELS_LAST_MODELS
    device.CUDA_CHANNELS_LAST_MODELS = keep if channels_last else frozenset()
    try:
        model = prepare_model(spec, torch.device("cuda")).train()
    finally:
        device.CUDA_CHANNELS_LAST_MODELS = keep
    opt = make_optimizer(spec, model.parameters(), capturable=graph)
    logs: list[str] = []
    step = make_step(
        model,
        opt,
        nn.CrossEntropyLoss(),
        data.train_x,
        data.train_y,
        64,
        graph=graph,
        precision=precision,
        log=logs.append,
    )
    if logs:
        print("  ", logs)
    n = data.train_x.shape[0]
    perm = torch.randperm(n, device="cuda")
    stop = threading.Event()
    if sampler:  # what the run screen's panel does: one reading a second, in the training process
        gpu = GpuSampler([0])

        def sample() -> None:
            while not stop.wait(1.0):
                gpu.read()

        threading.Thread(target=sample, daemon=True).start()
    for b in range(30):
        step(perm[b * 64 : (b + 1) * 64])
    torch.cuda.synchronize()
    steps, t0 = 0, time.perf_counter()
    losses = []
    while True:
        for _ in range(50):
            b = steps % (n // 64)
            losses.append(step(perm[b * 64 : (b + 1) * 64]))
            steps += 1
        torch.stack(losses).sum().item()  # a read-back every 50 steps, like log_every
        losses.clear()
        if time.perf_counter() - t0 >= seconds:
            break
    torch.cuda.synchronize()
    stop.set()
    return steps * 64 / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--models", default="resnet18,alexnet")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    data = TensorData.from_arrays(load_idx_folder(args.data_dir), torch.device("cuda"))
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, batch 64, samples/s")
    for model in args.models.split(","):
        r = {}
        r["eager fp32"] = samples_per_s(data, model, graph=False, seconds=args.seconds)
        r["graph fp32"] = samples_per_s(data, model, graph=True, seconds=args.seconds)
        r["graph fp32 NCHW"] = samples_per_s(data, model, graph=True, channels_last=False, seconds=args.seconds)
        r["eager bf16"] = samples_per_s(data, model, graph=False, precision="bf16", seconds=args.seconds)
        r["graph bf16"] = samples_per_s(data, model, graph=True, precision="bf16", seconds=args.seconds)
        r["graph fp32 + panel sampler"] = samples_per_s(data, model, graph=True, sampler=True, seconds=args.seconds)
        for k, v in r.items():
            print(f"  {model:9} {k:28} {v:10,.0f}")
        print(
            f"  {model:9} graph/eager fp32 {r['graph fp32'] / r['eager fp32']:.2f}x; "
            f"bf16/fp32 (graph) {r['graph bf16'] / r['graph fp32']:.2f}x; "
            f"channels-last/NCHW {r['graph fp32'] / r['graph fp32 NCHW']:.2f}x; "
            f"panel sampler {r['graph fp32 + panel sampler'] / r['graph fp32']:.3f}"
        )


if __name__ == "__main__":
    main()
