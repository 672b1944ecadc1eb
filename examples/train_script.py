"""A plain PyTorch training script, monitored by tuitrain: a small CNN on MNIST.

python examples/train_script.py --data-dir ../shared/data/mnist --runs-dir runs
tuitrain watch runs        # in another terminal: loss, accuracy, the epoch table (with lr)
"""

import argparse
import math
from pathlib import Path

import torch
from torch import nn

import tuitrain
from tuitrain.train.data import load_idx_folder  # reads the four IDX files (gzipped or not) into numpy

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"))
parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=1e-3)
args = parser.parse_args()

mnist = load_idx_folder(args.data_dir)


def tensors(images, labels):
    x = torch.from_numpy(images).float().div(255).sub(0.1307).div(0.3081).unsqueeze(1)
    return x, torch.from_numpy(labels).long()


train_x, train_y = tensors(mnist.train_images, mnist.train_labels)
test_x, test_y = tensors(mnist.test_images, mnist.test_labels)

config = {"model": "small_cnn", "channels": 16, "lr": args.lr, "batch_size": 128, "scheduler": "cosine"}
c = config["channels"]
model = nn.Sequential(
    nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(2 * c * 7 * 7, 10),
)  # fmt: skip
optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
batches = math.ceil(len(train_x) / config["batch_size"])

with tuitrain.init(
    label=f"small_cnn lr={args.lr:g}",
    config=config,
    runs_dir=args.runs_dir,
    preset="my-experiment",
    epochs=args.epochs,
    batches_per_epoch=batches,
) as run:
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(train_x)).split(config["batch_size"]):
            loss = nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss)  # a 0-d tensor: kept, and read back with the next 49 in one go
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x) for x in test_x.split(1000)])
        test_loss = nn.functional.cross_entropy(logits, test_y).item()
        accuracy = 100.0 * (logits.argmax(1) == test_y).float().mean().item()
        run.log_epoch(test_accuracy=accuracy, test_loss=test_loss, test_total=len(test_y), lr=lr)
print(f"Run file: {run.path}")
