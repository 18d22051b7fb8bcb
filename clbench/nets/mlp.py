"""Small MLP feature extractor (e.g. for (Permuted/Rotated) MNIST in the continual-learning literature)."""

from __future__ import annotations

import math

import torch
from torch import nn

from clbench.errors import ClbenchError


class MLP(nn.Module):
    """Flatten, then ``depth`` x [Linear(hidden), ReLU]: N x ... -> N x ``hidden``.

    ``in_features`` must equal the product of the non-batch input dims (784 for 1x28x28).
    """

    def __init__(self, in_features: int, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        if in_features < 1 or hidden < 1 or depth < 1:
            raise ClbenchError(
                f"mlp: in_features, hidden and depth must be >= 1 (got {in_features}, {hidden}, {depth})"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_dim: int = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = math.prod(x.shape[1:])
        if features != self.in_features:
            raise ClbenchError(
                f"mlp: built for {self.in_features} input features, got {tuple(x.shape[1:])} ({features} features)"
            )
        return self.net(x)


def mlp(in_features: int, hidden: int = 256, depth: int = 2) -> MLP:
    """MLP with ``depth`` hidden ReLU layers of width ``hidden``; ``out_dim = hidden``."""
    return MLP(in_features=in_features, hidden=hidden, depth=depth)
