"""The assignment's models. Model A and B exactly as specified; ResNet18 and AlexNet from torchvision,
adapted to 1x28x28 input and 10 classes.

AlexNet's stem (11x11 conv, stride 4) would shrink a 28x28 digit to 6x6 before the first pool, and
its three 3x3/stride-2 pools then leave nothing. We replace the stem with a 3x3 stride-1 conv
(1->64), keep the rest of torchvision's feature stack (28 -> 13 -> 6 -> 2 after the pools), and
pool to 2x2 instead of 6x6 so the classifier starts from 256*2*2 features (not 9216): same depth
and widths, about 1/10 of the parameters, trainable on a CPU for a short preset.

ResNet18 gets a 3x3 stride-1 stem for 1 channel (the 7x7/2 stem would throw away most of a 28x28
image); the max-pool is kept so layer1..4 run at 14, 7, 4, 2 pixels.

A preset can also name its own model, "module:Attr" (a class or factory of nn.Module, built with the
preset's model_args); check_model tries it on one batch before anything trains.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuitrain.core.errors import PresetError

NUM_CLASSES = 10

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class ModelA(nn.Module):
    """conv 1->8 (3x3, pad 1), activation, maxpool 2, fc 8*14*14->64, activation, fc 64->10."""

    def __init__(self, activation: str = "relu") -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), _act(activation), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 14 * 14, 64), _act(activation), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ModelB(nn.Module):
    """conv 1->8 and conv 8->16 (3x3, pad 1, each + activation + maxpool 2), fc 16*7*7->64, activation, fc 64->10."""

    def __init__(self, activation: str = "relu") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            _act(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            _act(activation),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 64), _act(activation), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet18_mnist() -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    return model


def alexnet_mnist() -> nn.Module:
    from torchvision.models import alexnet

    model = alexnet(weights=None, num_classes=10, dropout=0.5)
    model.features[0] = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1)
    model.features[1] = nn.ReLU(inplace=True)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    model.classifier[1] = nn.Linear(256 * 2 * 2, 4096)
    return model


def build_model(
    name: str, activation: str = "relu", model_args: dict[str, Any] | None = None, model_dir: str | None = None
) -> nn.Module:
    if name == "model_a":
        return ModelA(activation)
    if name == "model_b":
        return ModelB(activation)
    if name == "resnet18":
        return resnet18_mnist()
    if name == "alexnet":
        return alexnet_mnist()
    if ":" in name:
        return custom_model(name, model_args or {}, model_dir)
    raise ValueError(f"unknown model {name!r}")


class ModelError(PresetError):
    """A "module:Attr" model that cannot be imported, built or run; says which key and what is wrong."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"model = {name!r}: {what}")


def import_model(name: str, model_dir: str | None) -> Callable[..., Any]:
    """The class or factory that "module:Attr" names: the module from `model_dir` (the preset file's folder)
    when it is there, else from sys.path."""
    module_name, _, attr = name.partition(":")
    candidate = Path(model_dir, *module_name.split(".")).with_suffix(".py") if model_dir else None
    try:
        if candidate is not None and candidate.is_file():
            key = f"tuitrain_models.{module_name}"
            module = sys.modules.get(key)
            if module is None:
                spec = importlib.util.spec_from_file_location(key, candidate)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[key]
                    raise
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise ModelError(name, f"importing {module_name} failed: {exc}") from None
        beside = f" (not in {model_dir}, nor on sys.path)" if model_dir else " (not on sys.path)"
        raise ModelError(name, f"no module named {module_name!r}{beside}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say how, in one line
        raise ModelError(name, f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(name, f"module {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(name, f"{attr} is not an nn.Module class or factory (it is of type {type(obj).__name__})")
    return obj


def custom_model(name: str, model_args: dict[str, Any], model_dir: str | None) -> nn.Module:
    factory = import_model(name, model_dir)
    try:
        model = factory(**model_args)
    except Exception as exc:  # noqa: BLE001 - e.g. model_args it does not take
        raise ModelError(
            name, f"building it with model_args = {model_args} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(name, f"calling it gave an object of type {type(model).__name__}, not an nn.Module")
    return model


def check_model(name: str, model_args: dict[str, Any], model_dir: str | None, batch: int = 2) -> None:
    """Before training: the model imports, builds, and maps a batch of 1x28x28 images to (batch, 10) logits."""
    model = custom_model(name, model_args, model_dir)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(batch, 1, 28, 28))
    except Exception as exc:  # noqa: BLE001 - a forward pass that fails on MNIST-shaped input
        raise ModelError(
            name, f"a forward pass on a batch of shape ({batch}, 1, 28, 28) failed: {type(exc).__name__}: {exc}"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (batch, NUM_CLASSES):
        raise ModelError(
            name, f"a forward pass on a batch of shape ({batch}, 1, 28, 28) gave {shape}; expected ({batch}, 10) logits"
        )
