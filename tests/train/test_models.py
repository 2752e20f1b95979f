"""The built-in models produce one logit per class for the configured inputs."""

from __future__ import annotations

import torch

from orchestrator.config.schema import CnnConfig, MlpConfig
from orchestrator.train.models import build_model


def test_cnn_on_digit_images_and_mlp_on_vectors():
    cnn = build_model(CnnConfig(channels=[8, 16, 16]), (1, 8, 8), 10)
    assert cnn(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    mlp = build_model(MlpConfig(hidden_sizes=[32], dropout=0.1), (64,), 3)
    assert mlp(torch.zeros(2, 64)).shape == (2, 3)
    assert any(isinstance(layer, torch.nn.Dropout) for layer in mlp)
