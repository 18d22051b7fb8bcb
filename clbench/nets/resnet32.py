"""CIFAR ResNet-32 (He et al. 2016, Sec. 4.2) as used by iCaRL and PyCIL.

3x3 stem conv with 16 filters, three stages of 5 BasicBlocks with 16/32/64 channels (strides
1, 2, 2), global average pooling -> 64 features. Shortcuts are **option A**: parameter-free
identity, where the resolution halves the input is subsampled with stride 2 and the new
channels are zero-padded (as in the original paper's CIFAR experiments and PyCIL).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from clbench.errors import ClbenchError


class _ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling plus zero-padding of the extra channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            lo = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))
        return x


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = (
            _ShortcutA(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(nn.Module):
    """Feature extractor: N x C x H x W -> N x 64 (``out_dim``); no classifier head.

    ``blocks_per_stage=5`` gives ResNet-32 (depth 6n+2); other values give ResNet-20/44/56.
    """

    def __init__(self, in_channels: int = 3, blocks_per_stage: int = 5) -> None:
        super().__init__()
        if in_channels < 1 or blocks_per_stage < 1:
            raise ClbenchError(
                f"resnet32: in_channels and blocks_per_stage must be >= 1 (got {in_channels}, {blocks_per_stage})"
            )
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_ch = 16
        for out_ch, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [_Block(in_ch, out_ch, stride)]
            blocks += [_Block(out_ch, out_ch, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stage1, self.stage2, self.stage3 = stages
        self.out_dim: int = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stage3(self.stage2(self.stage1(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def resnet32(in_channels: int = 3) -> ResNet32:
    """CIFAR ResNet-32 with option-A shortcuts, 64-d features."""
    return ResNet32(in_channels=in_channels, blocks_per_stage=5)
