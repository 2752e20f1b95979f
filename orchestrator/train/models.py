"""The built-in model architectures, built from their config group option."""

from __future__ import annotations

import math

from torch import nn

from orchestrator.config.schema import CnnConfig, MlpConfig, ModelConfig


def build_model(model: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network for `model` (mlp or cnn) sized for the data set's inputs and classes."""
    if isinstance(model, MlpConfig):
        return _mlp(model, input_shape, num_classes)
    if isinstance(model, CnnConfig):
        return _cnn(model, input_shape, num_classes)
    raise ValueError(f"model={model.name} is not a built-in model: use mlp or cnn")


def _mlp(model: MlpConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in model.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if model.dropout > 0:
            layers.append(nn.Dropout(model.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _cnn(model: CnnConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for index, out_channels in enumerate(model.channels):
        layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        if index > 0:  # keep full resolution for the first block: the inputs can be as small as 8x8
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out_channels
    layers += [nn.Flatten(), nn.Linear(channels * height * width, model.hidden), nn.ReLU()]
    if model.dropout > 0:
        layers.append(nn.Dropout(model.dropout))
    layers.append(nn.Linear(model.hidden, num_classes))
    return nn.Sequential(*layers)
