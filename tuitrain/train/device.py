"""Where a run trains: the device, its description and environment, the model and the data on it, the precision and
the CPU threads it trains with."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch
from torch import nn

from tuitrain.core.cores import forced_cpu_threads
from tuitrain.core.devices import cpu_device
from tuitrain.core.errors import TuitrainError
from tuitrain.core.spec import RunSpec
from tuitrain.records import EnvInfo
from tuitrain.train.data import NORMALISATION, MnistArrays
from tuitrain.train.models import build_model


def select_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TuitrainError("--device cuda: no CUDA device is available on this machine. Use --device auto or cpu.")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_count() -> int:
    """CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_index(device: torch.device) -> int | None:
    """The CUDA device index a run on `device` uses (a plain "cuda" means the current device); None on the CPU."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_device(torch.get_num_threads())


def environment(device: torch.device) -> EnvInfo:
    return EnvInfo(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        device_type="cuda" if device.type == "cuda" else "cpu",  # the only kinds a RunSpec can name
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        python_version=platform.python_version(),
    )


@dataclass
class TensorData:
    """MNIST as normalised float tensors (N, 1, 28, 28) and int64 labels, already on the device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    val_x: torch.Tensor | None = None
    """Validation images held out of the training images (`split_validation`); None: no validation set."""
    val_y: torch.Tensor | None = None

    def split_validation(self, n: int) -> TensorData:
        """The same data with the last `n` training images held out as the validation set (views, no copy): the
        same images for every run and seed, so that runs are chosen on one validation set."""
        if n <= 0:
            return self
        keep = int(self.train_x.shape[0]) - n
        if keep < 1:
            raise ValueError(f"val_split {n} leaves no training images (of {int(self.train_x.shape[0])})")
        return TensorData(
            self.train_x[:keep],
            self.train_y[:keep],
            self.test_x,
            self.test_y,
            self.source,
            self.train_x[keep:],
            self.train_y[keep:],
        )

    @classmethod
    def from_arrays(
        cls,
        arrays: MnistArrays,
        device: torch.device,
        subset: int | None = None,
        test_subset: int | None = None,
        dataset: str = "mnist",
    ) -> TensorData:
        mean, std = NORMALISATION[dataset]

        def images(a):  # move uint8 (4x less traffic), then normalise on the device
            x = torch.from_numpy(a).to(device).unsqueeze(1).float().div_(255.0)
            return x.sub_(mean).div_(std).contiguous()

        def labels(a):
            return torch.from_numpy(a).to(device=device, dtype=torch.long)

        n, m = subset, test_subset
        return cls(
            images(arrays.train_images[:n]),
            labels(arrays.train_labels[:n]),
            images(arrays.test_images[:m]),
            labels(arrays.test_labels[:m]),
            arrays.source,
        )


def cpu_threads(spec: RunSpec, device: torch.device) -> int | None:
    """Intra-op threads forced for training on the CPU (TUITRAIN_CPU_THREADS); None: torch's default, or the
    run's share of the cores when it holds a core lease (core.cores).

    On an idle 2-core machine two threads trained Model A/B 1.5x faster than one (42k vs 28k
    samples/s for Model A); on a machine whose cores are busy with other work, threads wait on each
    other at every small op and one thread can be several times faster: that is what the variable is for.
    """
    return forced_cpu_threads() if device.type == "cpu" else None


CUDA_CHANNELS_LAST_MODELS = frozenset({"resnet18", "alexnet"})
"""Models kept in channels-last layout on a GPU too: their wide convolutions run on cuDNN's NHWC kernels (tensor
cores); the 1-channel input is already in that layout. Model A/B keep NCHW there (their 8/16-channel convolutions
gain nothing and would pay for conversions)."""


def prepare_model(spec: RunSpec, device: torch.device) -> nn.Module:
    """The spec's model on `device`; on the CPU in channels-last layout: the CPU's max-pool and convolution
    kernels are up to about 2x faster in NHWC for these CNNs (the model computes the same function).
    On a GPU, channels-last for CUDA_CHANNELS_LAST_MODELS only."""
    model = build_model(spec.model, spec.activation, spec.model_args, spec.model_dir).to(device=device)
    if device.type == "cpu" or spec.model in CUDA_CHANNELS_LAST_MODELS:
        return model.to(memory_format=torch.channels_last)
    return model


def usable_precision(precision: str, device: torch.device) -> str:
    """The precision a run on `device` trains in: bf16 only on a CUDA GPU that supports it, else fp32."""
    if precision == "bf16" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"
