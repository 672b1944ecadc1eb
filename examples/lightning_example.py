"""A PyTorch Lightning script logged by tuitrain's Lightning logger: a small MLP on synthetic data (no download),
seconds on a CPU.

python examples/lightning_example.py --runs-dir runs --label lr=0.01
tuitrain watch runs        # in another terminal: the loss, val_loss at each epoch end, the status
tuitrain compare runs      # several runs (e.g. --lr 0.1 and --lr 0.01) side by side

--tensorboard DIR also logs with Lightning's TensorBoardLogger into DIR: `tuitrain watch DIR` reads its event files.
--max-steps N trains N steps with no epoch limit (max_epochs=-1): the run's length in epochs is not known upfront.
--fail-at-step N raises an exception at step N (the run ends failed).
"""

import argparse

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuitrain.integrations.lightning import TuitrainLogger

parser = argparse.ArgumentParser()
parser.add_argument("--runs-dir", default="runs")
parser.add_argument("--label", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--samples", type=int, default=2048)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--max-steps", type=int, default=-1)
parser.add_argument("--tensorboard", default=None, metavar="DIR")
parser.add_argument("--fail-at-step", type=int, default=None)
args = parser.parse_args()


def synthetic(samples: int, seed: int) -> TensorDataset:
    """Points in 20 dimensions, labelled by a fixed random linear teacher into 4 classes: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(samples, 20, generator=g)
    return TensorDataset(x, (x @ teacher).argmax(dim=1))


class Classifier(L.LightningModule):
    def __init__(self, lr: float, hidden: int = 64, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(20, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at_step is not None and self.global_step >= self.hparams.fail_at_step:
            raise RuntimeError(f"failing on purpose at step {self.global_step}")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean() * 100)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


# the logger takes the planned epochs (max_epochs) and the samples per step (the batch size) from the trainer
loggers = [TuitrainLogger(runs_dir=args.runs_dir, label=args.label or f"lr={args.lr:g}")]
if args.tensorboard:
    loggers.append(L.pytorch.loggers.TensorBoardLogger(args.tensorboard))
trainer = L.Trainer(
    max_epochs=args.epochs if args.max_steps < 0 else -1,
    max_steps=args.max_steps,
    logger=loggers,
    log_every_n_steps=5,
    accelerator="cpu",
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
train = DataLoader(synthetic(args.samples, seed=1), batch_size=args.batch_size, shuffle=True)
val = DataLoader(synthetic(512, seed=2), batch_size=256)
trainer.fit(Classifier(args.lr, fail_at_step=args.fail_at_step), train, val)
