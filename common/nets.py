"""Model zoo: small Opacus-compatible networks, built by name from a run configuration."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from opacus.validators import ModuleValidator
from torch import nn

from fedvault.common.errors import ConfigError

__all__ = ["MODELS", "CNN", "MLP", "Linear", "ModelSpec", "build_model"]


class MLP(nn.Module):
    """A multi-layer perceptron for tabular data (flattens any input shape)."""

    def __init__(self, *, in_features: int, num_classes: int, hidden: Sequence[int] = (64,)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class Linear(nn.Module):
    """Multinomial logistic regression: one linear layer over the flattened input.

    Few parameters, so DP-SGD's noise (the same per coordinate whatever the model's size)
    costs it less accuracy than a network; on small tabular sets it is often as good.
    """

    def __init__(self, *, in_features: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class CNN(nn.Module):
    """A small convolutional network for 1- or 3-channel images.

    GroupNorm instead of BatchNorm (per-sample gradients need per-sample statistics), and
    an adaptive pool so any image size of at least 4x4 works.
    """

    def __init__(self, *, in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for c in channels:
            layers += [
                nn.Conv2d(width, c, kernel_size=3, padding=1),
                nn.GroupNorm(num_groups=min(4, c), num_channels=c),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.flatten(self.pool(self.features(x)), 1))
        return out


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model needs to know about the data to be built."""

    name: str
    build: Callable[[tuple[int, ...], int], nn.Module]
    description: str


def _build_mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    in_features = 1
    for dim in input_shape:
        in_features *= dim
    return MLP(in_features=in_features, num_classes=num_classes)


def _build_linear(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if not input_shape or min(input_shape) < 1:
        raise ConfigError(
            f"Model 'linear' needs examples with at least one feature (every dimension of "
            f"the shape at least 1); this data has shape {input_shape}."
        )
    return Linear(in_features=math.prod(input_shape), num_classes=num_classes)


def _build_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape[1:]) < 4:
        raise ConfigError(
            f"Model 'cnn' needs images shaped (channels, height, width) with 1 or 3 "
            f"channels and sides of at least 4; this data has shape {input_shape}. "
            "Use model 'mlp' for tabular data."
        )
    return CNN(in_channels=input_shape[0], num_classes=num_classes, channels=CNN_CHANNELS)


CNN_CHANNELS = (16, 32)

MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", _build_mlp, "MLP for tabular data (one hidden layer of 64)"),
    "cnn": ModelSpec("cnn", _build_cnn, "two-block CNN with GroupNorm for 1/3-channel images"),
    "linear": ModelSpec(
        "linear",
        _build_linear,
        "multinomial logistic regression (one linear layer) on the flattened input; any shape",
    ),
}


def build_model(name: str, *, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build a registered model and check that Opacus can train it privately.

    Args:
        name: a key of ``MODELS``.
        input_shape: the shape of one example, without the batch dimension.
        num_classes: the number of output classes (at least 2).

    Raises:
        ConfigError: unknown name, unusable shape or class count, or a model Opacus refuses.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ConfigError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes, got {num_classes}.")
    model = spec.build(tuple(int(d) for d in input_shape), num_classes)
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"Model {name!r} cannot be trained with DP-SGD: {errors[0]}")
    return model
