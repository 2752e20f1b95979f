"""The built-in model architectures, built from their config group option."""

from __future__ import annotations

import math

import torch
from torch import nn

from orchestrator.config.schema import CnnConfig, GptConfig, MlpConfig, ModelConfig


def build_model(model: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network for `model` (mlp, cnn or gpt) sized for the data set's inputs and classes (gpt: tokens)."""
    if isinstance(model, MlpConfig):
        return _mlp(model, input_shape, num_classes)
    if isinstance(model, CnnConfig):
        return _cnn(model, input_shape, num_classes)
    if isinstance(model, GptConfig):
        from orchestrator.train.gpt import Gpt

        return Gpt(model, vocab_size=num_classes)
    raise ValueError(f"model={model.name} is not a built-in model: use mlp, cnn or gpt")


class ChannelsLastSequential(nn.Sequential):
    """nn.Sequential over (N, C, H, W) inputs that runs every conv in the channels_last (NHWC) memory format.

    A conv whose weight and input are both channels_last skips the layout transposes around cuDNN's
    NHWC tensor-core kernels. The input is converted here (a no-op when it already is), so evaluation
    and the logged model get it too; the layers and their state_dict names are nn.Sequential's.
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(inputs.contiguous(memory_format=torch.channels_last))


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
    if model.channels_last:
        # Module.to takes memory_format (documented), which its stubs' overloads leave out
        return ChannelsLastSequential(*layers).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return nn.Sequential(*layers)
