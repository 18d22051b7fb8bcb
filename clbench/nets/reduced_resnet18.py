"""Reduced ResNet-18 of the continual-learning literature (GEM; reused by Mammoth, ER-ACE, AdaB²N).

Layout: 3x3 stride-1 stem conv (no max-pool), BasicBlock stages [2, 2, 2, 2] with widths
nf, 2nf, 4nf, 8nf and strides 1, 2, 2, 2, global average pooling -> ``8 * nf`` features.
``nf=20`` is GEM's reduced net, ``nf=64`` the full-width variant used by Mammoth.
Shortcuts are a 1x1 conv + norm whenever stride or width changes (option B).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from clbench.errors import ClbenchError

NormLayer = Callable[[int], nn.Module]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with norm + ReLU and an identity or 1x1-conv projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = norm_layer(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = norm_layer(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                norm_layer(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """Feature extractor: N x C x H x W -> N x ``out_dim`` (= 8 * nf); no classifier head.

    ``norm_layer`` is called with a channel count for every normalisation layer (stem, blocks
    and shortcuts), so e.g. AdaB²N can swap out all of the BatchNorm2d layers.
    """

    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 20,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if in_channels < 1 or nf < 1:
            raise ClbenchError(f"reduced_resnet18: in_channels and nf must be >= 1 (got {in_channels}, {nf})")
        self.conv1 = _conv3x3(in_channels, nf)
        self.bn1 = norm_layer(nf)
        stages = []
        in_ch = nf
        for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2)):
            out_ch = nf * mult
            stages.append(
                nn.Sequential(
                    BasicBlock(in_ch, out_ch, stride, norm_layer),
                    BasicBlock(out_ch, out_ch, 1, norm_layer),
                )
            )
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim: int = 8 * nf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def reduced_resnet18(
    in_channels: int = 3, nf: int = 20, norm_layer: NormLayer = nn.BatchNorm2d
) -> ReducedResNet18:
    """GEM's reduced ResNet-18 (``nf=20``) or the Mammoth full-width one (``nf=64``)."""
    return ReducedResNet18(in_channels=in_channels, nf=nf, norm_layer=norm_layer)
