"""A small convolutional classifier: a stand-in for your own network."""

from __future__ import annotations

from torch import nn


class DigitNet(nn.Module):
    """Two 3x3 conv blocks and a linear head for 1 x 8 x 8 images; `width` is the conv channels."""

    def __init__(self, width: int = 16, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * 4 * 4, num_classes))

    def forward(self, images):
        return self.head(self.features(images))
