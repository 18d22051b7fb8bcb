"""Conv-4 backbone of Matching Networks (Vinyals et al. 2016) / Prototypical Networks (Snell et al. 2017).

4 x [3x3 conv (``hidden`` filters, padding 1, with bias), BatchNorm2d, ReLU, 2x2 max-pool], then
flatten. Each pool floors the spatial size, so ``out_dim = hidden * (S // 16) ** 2``:
1600 at 84x84 (5x5 map), 64 at 28x28 (1x1 map).
"""

from __future__ import annotations

import torch
from torch import nn

from clbench.errors import ClbenchError


def _pooled(size: int, n_pools: int = 4) -> int:
    for _ in range(n_pools):
        size //= 2
    return size


class Conv4(nn.Module):
    """Feature extractor: N x C x S x S -> N x ``out_dim``; ``input_size`` S fixes ``out_dim``."""

    def __init__(self, in_channels: int = 3, hidden: int = 64, input_size: int = 84) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ClbenchError(f"conv4: in_channels and hidden must be >= 1 (got {in_channels}, {hidden})")
        side = _pooled(input_size)
        if side < 1:
            raise ClbenchError(f"conv4: input_size must be >= 16 for four 2x2 max-pools (got {input_size})")
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(4):
            layers += [
                nn.Conv2d(ch, hidden, 3, padding=1),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            ch = hidden
        self.encoder = nn.Sequential(*layers)
        self.input_size = input_size
        self.out_dim: int = hidden * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ClbenchError(
                f"conv4: built for {self.input_size}x{self.input_size} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}"
            )
        return torch.flatten(self.encoder(x), 1)


def conv4(in_channels: int = 3, hidden: int = 64, input_size: int = 84) -> Conv4:
    """Conv-4 with flattened output: 1600-d at 84 px, 64-d at 28 px (``hidden=64``)."""
    return Conv4(in_channels=in_channels, hidden=hidden, input_size=input_size)
