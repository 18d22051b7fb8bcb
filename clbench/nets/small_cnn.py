"""Small CNN for tiny images (e.g. 8x8 scikit-learn digits), usable up to 224x224.

[3x3 conv(``width``), BN, ReLU], [3x3 conv(2 * ``width``), BN, ReLU], 2x2 max-pool, global
average pooling -> ``out_dim = 2 * width``. Global pooling makes the output size independent
of the input size; the max-pool uses ``ceil_mode`` so even 1x1 inputs work.
"""

from __future__ import annotations

import torch
from torch import nn

from clbench.errors import ClbenchError


class SmallCNN(nn.Module):
    """Feature extractor: N x C x H x W -> N x ``2 * width``; no classifier head."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ClbenchError(f"small_cnn: in_channels and width must be >= 1 (got {in_channels}, {width})")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim: int = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def small_cnn(in_channels: int = 3, width: int = 32) -> SmallCNN:
    """Two conv-BN-ReLU layers (width, 2*width), max-pool, GAP; ``out_dim = 2 * width``."""
    return SmallCNN(in_channels=in_channels, width=width)
