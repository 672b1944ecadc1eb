"""The assignment's models. Model A and B exactly as specified; ResNet18 and AlexNet from torchvision,
adapted to 1x28x28 input and 10 classes.

AlexNet's stem (11x11 conv, stride 4) would shrink a 28x28 digit to 6x6 before the first pool, and
its three 3x3/stride-2 pools then leave nothing. We replace the stem with a 3x3 stride-1 conv
(1->64), keep the rest of torchvision's feature stack (28 -> 13 -> 6 -> 2 after the pools), and
pool to 2x2 instead of 6x6 so the classifier starts from 256*2*2 features (not 9216): same depth
and widths, about 1/10 of the parameters, trainable on a CPU for a short preset.

ResNet18 gets a 3x3 stride-1 stem for 1 channel (the 7x7/2 stem would throw away most of a 28x28
image); the max-pool is kept so layer1..4 run at 14, 7, 4, 2 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

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


def build_model(name: str, activation: str = "relu") -> nn.Module:
    if name == "model_a":
        return ModelA(activation)
    if name == "model_b":
        return ModelB(activation)
    if name == "resnet18":
        return resnet18_mnist()
    if name == "alexnet":
        return alexnet_mnist()
    raise ValueError(f"unknown model {name!r}")
