"""Target networks with no weights of their own: run with K generated weight vectors in one pass."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TargetKind = Literal["mlp", "cnn"]


class TargetNet(nn.Module):
    """A classifier whose every weight comes from outside: `forward(x, weights, tasks)` runs it with each
    row of `weights` (K x `n_weights`) on the same inputs and returns K x N x `num_classes` logits.

    - "mlp": flatten, [Linear(width), ReLU] per entry of `widths`, Linear(num_classes).
    - "cnn": per entry of `widths` [3x3 conv(width) without bias, BatchNorm, ReLU, 2x2 max-pool (ceil)],
      global average pool, Linear(num_classes). The BatchNorm affine weights are generated; its running
      statistics are kept per task (buffers `mean{i}`, `var{i}`: n_tasks x width). Training uses batch
      statistics and updates the statistics of the one task trained; evaluation uses each row's task's.

    The K weight sets run as one batched computation (einsum for linear layers; one grouped convolution
    for the K copies of a conv layer), never as a Python loop over K.
    """

    def __init__(self, kind: TargetKind, input_shape: tuple[int, ...], widths: tuple[int, ...], num_classes: int,
                 n_tasks: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.kind, self.momentum = kind, momentum
        self.shapes: list[tuple[int, ...]] = []
        self.inits: list[float] = []  # > 0: uniform in +-1/sqrt(fan_in) with this fan_in; else the constant -x
        if kind == "mlp":
            previous = math.prod(input_shape)
            for width in (*widths, num_classes):
                self.shapes += [(width, previous), (width,)]
                self.inits += [previous, previous]
                previous = width
        else:
            previous = input_shape[0]
            for i, width in enumerate(widths):
                self.shapes += [(width, previous, 3, 3), (width,), (width,)]  # conv, BN weight, BN bias
                self.inits += [previous * 9, -1.0, -0.0]
                self.register_buffer(f"mean{i}", torch.zeros(n_tasks, width))
                self.register_buffer(f"var{i}", torch.ones(n_tasks, width))
                previous = width
            self.shapes += [(num_classes, previous), (num_classes,)]
            self.inits += [previous, previous]
        self.sizes = [math.prod(s) for s in self.shapes]

    @property
    def n_weights(self) -> int:
        return sum(self.sizes)

    def initial_weights(self) -> torch.Tensor:
        """One flat weight vector initialised as PyTorch initialises the same layers: weights and biases
        uniform in +-1/sqrt(fan_in), BatchNorm weight 1 and bias 0."""
        parts = [torch.empty(size).uniform_(-1 / math.sqrt(init), 1 / math.sqrt(init)) if init > 0
                 else torch.full((size,), -init) for size, init in zip(self.sizes, self.inits)]
        return torch.cat(parts)

    def split(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """K x n_weights -> the per-layer tensors, each K x shape."""
        return [w.reshape(len(weights), *s) for w, s in zip(weights.split(self.sizes, dim=1), self.shapes)]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, tasks: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Logits K x N x num_classes of `x` (N x ...) under each weight row; `tasks` (K,) picks each row's
        BatchNorm statistics. `train` (one row only) normalises by batch statistics and updates its task's."""
        params = self.split(weights)
        if self.kind == "mlp":
            h = x.flatten(1)
            for i in range(0, len(params), 2):
                h = torch.einsum("nd,kod->kno" if h.dim() == 2 else "knd,kod->kno", h, params[i])
                h = h + params[i + 1][:, None, :]
                h = torch.relu(h) if i + 2 < len(params) else h
            return h
        k, h = len(weights), x
        for layer, i in enumerate(range(0, len(params) - 2, 3)):
            conv, gamma, beta = params[i], params[i + 1], params[i + 2]
            h = F.conv2d(h, conv.flatten(0, 1), padding=1, groups=1 if layer == 0 else k)
            h = self._norm(h, layer, gamma.flatten(), beta.flatten(), tasks, train)
            h = F.max_pool2d(torch.relu(h), 2, ceil_mode=True)
        h = h.mean((2, 3)).unflatten(1, (k, -1))  # N x K x C
        return torch.einsum("nkc,koc->kno", h, params[-2]) + params[-1][:, None, :]

    def _norm(self, h: torch.Tensor, layer: int, gamma: torch.Tensor, beta: torch.Tensor, tasks: torch.Tensor,
              train: bool) -> torch.Tensor:
        mean, var = getattr(self, f"mean{layer}"), getattr(self, f"var{layer}")
        if train:  # the row views are updated in place: only this task's statistics move
            task = int(tasks[0])
            return F.batch_norm(h, mean[task], var[task], gamma, beta, True, self.momentum)
        return F.batch_norm(h, mean[tasks].flatten(), var[tasks].flatten(), gamma, beta, False)
