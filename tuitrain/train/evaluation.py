"""Test-set figures counted on the device: the per-sample loss sum and the confusion matrix, for one run or for the
stacked runs of a fused group.

Over the evaluation's batches the sums stay on the device and nothing is read back; `EvalCounts.read_back` brings
everything to the host in one go, the loss sums (float64) and the counts together as one float64 tensor (exact
for counts below 2**53): one sync per evaluation, never one per batch. The correct count is the matrix's diagonal.
The counts are added with scatter_add_, not bincount: CUDA's bincount reads its input's maximum back to size its
output, a sync per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    """One run's figures on the test set."""

    loss: float
    """Per-sample mean loss."""
    correct: int
    total: int
    confusion: list[list[int]]
    """confusion[t][p]: test images of class t predicted as class p (records.EpochRecord.confusion)."""


class EvalCounts:
    """Loss sums and confusion counts of `runs` runs over an evaluation's batches, on `device`."""

    def __init__(self, runs: int, device: torch.device) -> None:
        self.runs = runs
        self.loss_sum = torch.zeros(runs, device=device, dtype=torch.float64)
        self.cells: torch.Tensor | None = None
        """runs * classes * classes counts, flat (run, true, predicted); made at the first batch, which says the
        number of classes."""
        self.classes = 0

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: `logits` of shape (runs, batch, classes), or (batch, classes) for one run; `target`
        of shape (batch,). Queued on the device: nothing is read back."""
        if logits.dim() == 2:
            logits = logits.unsqueeze(0)
        runs, batch, classes = logits.shape
        if self.cells is None:
            self.classes = classes
            self.cells = torch.zeros(runs * classes * classes, device=logits.device, dtype=torch.long)
        per_sample = nn.functional.cross_entropy(
            logits.reshape(-1, classes).float(), target.repeat(runs), reduction="none"
        )
        self.loss_sum += per_sample.view(runs, batch).sum(1).double()
        offsets = torch.arange(runs, device=logits.device).unsqueeze(1) * (classes * classes)
        cell = (offsets + target * classes + logits.argmax(-1)).flatten()
        self.cells.scatter_add_(0, cell, torch.ones_like(cell))

    def read_back(self, total: int) -> list[Evaluation]:
        """Each run's figures over the `total` images counted: the one read-back of the evaluation."""
        cells = self.cells if self.cells is not None else self.loss_sum.new_zeros(0, dtype=torch.long)
        values = torch.cat((self.loss_sum, cells.double())).tolist()
        losses, counts = values[: self.runs], [int(v) for v in values[self.runs :]]
        c = self.classes
        out = []
        for run in range(self.runs):
            flat = counts[run * c * c : (run + 1) * c * c]
            matrix = [flat[t * c : (t + 1) * c] for t in range(c)]
            out.append(Evaluation(losses[run] / max(total, 1), sum(matrix[i][i] for i in range(c)), total, matrix))
        return out
