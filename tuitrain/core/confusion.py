"""Per-class results of a classifier: the confusion matrix a run records at each evaluation
(records.EpochRecord.confusion), what it says per class, and the classes' names.

The engine counts the matrix on its device (tuitrain.train.evaluation); the run screen, compare and the report
read it through these functions. matrix[t][p] counts the test images of true class t predicted as class p, the
classes in the dataset's label order. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Matrix = Sequence[Sequence[int]]
"""matrix[true][predicted]: test images of class `true` predicted as `predicted`."""

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple("0123456789"),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    # KMNIST's ten hiragana, romanised as the dataset's own class map names them
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}
"""The names of each dataset's classes, in label order."""

Z_NOISE = 2.0
"""Two standard errors: a per-class difference smaller than this is not claimed (as compare's accuracies)."""


def class_names(dataset: str, count: int) -> list[str]:
    """The names of a dataset's `count` classes in label order; their numbers where the dataset is not known."""
    names = CLASS_NAMES.get(dataset)
    if names is None or len(names) != count:
        return [str(i) for i in range(count)]
    return list(names)


def class_totals(matrix: Matrix) -> list[int]:
    """Test images per true class (the rows' sums)."""
    return [sum(row) for row in matrix]


def class_accuracy(matrix: Matrix) -> list[float | None]:
    """Per true class, the percentage of its test images predicted as it; None for a class without test images."""
    return [100.0 * row[i] / total if (total := sum(row)) else None for i, row in enumerate(matrix)]


@dataclass(frozen=True)
class Confusion:
    """One cell off the diagonal: test images of class `true` taken for class `predicted`."""

    true: int
    predicted: int
    count: int


def most_confused(matrix: Matrix) -> Confusion | None:
    """The cell off the diagonal with the most images (the first of equals, in row order); None without errors."""
    cells = [Confusion(t, p, n) for t, row in enumerate(matrix) for p, n in enumerate(row) if t != p and n > 0]
    return max(cells, key=lambda c: c.count, default=None)


def summed(matrices: Sequence[Matrix]) -> list[list[int]]:
    """The cell-wise sum of matrices of one size."""
    size = len(matrices[0])
    return [[sum(m[t][p] for m in matrices) for p in range(size)] for t in range(size)]


@dataclass(frozen=True)
class ClassDifference:
    """One class's test accuracy in two runs, and whether the difference is beyond noise."""

    index: int
    accuracy_a: float
    accuracy_b: float
    noise: float
    """Two standard errors (in points) of the difference (binomial, over each run's test images of the class)."""

    @property
    def points(self) -> float:
        return self.accuracy_a - self.accuracy_b

    @property
    def beyond_noise(self) -> bool:
        return abs(self.points) > self.noise


def class_differences(a: Matrix, b: Matrix) -> list[ClassDifference]:
    """Per class, its accuracy in run a and run b, largest difference first; classes either run has no test image
    of are left out, and so is everything where the matrices differ in size."""
    if len(a) != len(b):
        return []
    out = []
    for i, (acc_a, acc_b, n_a, n_b) in enumerate(
        zip(class_accuracy(a), class_accuracy(b), class_totals(a), class_totals(b), strict=True)
    ):
        if acc_a is None or acc_b is None:
            continue
        var = sum((acc / 100) * (1 - acc / 100) / n for acc, n in ((acc_a, n_a), (acc_b, n_b)))
        out.append(ClassDifference(i, acc_a, acc_b, Z_NOISE * 100.0 * math.sqrt(var)))
    return sorted(out, key=lambda d: -abs(d.points))


def confusion_text(confusion: Confusion, names: Sequence[str]) -> str:
    """'4 taken for 9: 23 times'."""
    times = "once" if confusion.count == 1 else f"{confusion.count} times"
    return f"{names[confusion.true]} taken for {names[confusion.predicted]}: {times}"
