"""Few-shot ResNet-12 (Oreshkin et al. TADAM 2018; Lee et al. MetaOptNet 2019).

Four residual blocks; each is 3 x [3x3 conv (no bias), BatchNorm2d] with LeakyReLU(0.1) after
the first two, the third BN output added to a 1x1-conv + BN shortcut, then LeakyReLU(0.1) and
a 2x2 max-pool. Widths default to (64, 160, 320, 640); global average pooling gives
``out_dim = widths[-1]``. DropBlock regularisation (used by MetaOptNet) is omitted.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from clbench.errors import ClbenchError


def _conv_bn(in_ch: int, out_ch: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=False), nn.BatchNorm2d(out_ch))


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_ch, out_ch, 3),
            nn.LeakyReLU(0.1),
            _conv_bn(out_ch, out_ch, 3),
            nn.LeakyReLU(0.1),
            _conv_bn(out_ch, out_ch, 3),
        )
        self.shortcut = _conv_bn(in_ch, out_ch, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.leaky_relu(self.body(x) + self.shortcut(x), 0.1))


class ResNet12(nn.Module):
    """Feature extractor: N x C x H x W -> N x ``widths[-1]``; no classifier head.

    The four 2x2 max-pools floor like the reference code (84 -> 42 -> 21 -> 10 -> 5), so inputs
    must be at least 16x16; the literature feeds 84x84 (mini-ImageNet) or 32x32 (CIFAR-FS, FC100).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (64, 160, 320, 640)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1 or len(widths) != 4 or min(widths) < 1:
            raise ClbenchError(
                f"resnet12: need in_channels >= 1 and four positive widths (got {in_channels}, {widths})"
            )
        blocks = []
        ch = in_channels
        for w in widths:
            blocks.append(_Block(ch, w))
            ch = w
        self.blocks = nn.Sequential(*blocks)
        self.widths = widths
        self.out_dim: int = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 16:
            raise ClbenchError(f"resnet12: inputs must be at least 16x16, got {x.shape[-2]}x{x.shape[-1]}")
        return torch.flatten(F.adaptive_avg_pool2d(self.blocks(x), 1), 1)


def resnet12(in_channels: int = 3, widths: Sequence[int] = (64, 160, 320, 640)) -> ResNet12:
    """MetaOptNet/TADAM-style ResNet-12 without DropBlock; 640-d features by default."""
    return ResNet12(in_channels=in_channels, widths=widths)
