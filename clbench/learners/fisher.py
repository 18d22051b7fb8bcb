"""The diagonal empirical Fisher of a classifier, from per-sample gradients (torch.func: one vmapped
backward pass per chunk of samples, no per-sample Python loop)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Tensors = dict[str, torch.Tensor]

GRADIENT_BUDGET = 2**25
"""Per-sample gradient entries held at once (128 MiB of float32): a chunk has GRADIENT_BUDGET //
(parameter count) samples, at least one."""


def empirical_fisher(net: nn.Module, weights: Tensors, x: torch.Tensor, y: torch.Tensor,
                     restrict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Tensors:
    """F_i = mean over the n samples of (d log p(y_k | x_k) / d theta_i)^2 for every parameter of `net`.

    p is the softmax of `net`'s logits, after `restrict(logits, labels)` when given (N x C logits and
    N labels in, N x C out: e.g. a `TaskMask`, so that p is the likelihood a masked task-incremental
    loss trains). The network is evaluated at `weights` (floating-point state-dict entries by name; a
    parameter or buffer missing there keeps the network's own), in eval mode (batch norm reads its
    running statistics, which a single sample needs and vmap allows), without changing the network.
    """
    params = {name: weights.get(name, p).detach() for name, p in net.named_parameters()}
    buffers = {name: weights.get(name, b) for name, b in net.named_buffers()}

    def log_likelihood(theta: Tensors, sample: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(net, (theta, buffers), (sample.unsqueeze(0),))
        labels = label.unsqueeze(0)
        log_p = F.log_softmax(logits if restrict is None else restrict(logits, labels), dim=1)
        return log_p.gather(1, labels.unsqueeze(1))[0, 0]

    per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    chunk = max(1, GRADIENT_BUDGET // sum(p.numel() for p in params.values()))
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    training = net.training
    net.eval()
    try:
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            for name, g in per_sample(params, xs, ys).items():
                fisher[name] += g.pow(2).sum(0)
    finally:
        net.train(training)
    return {name: f / len(x) for name, f in fisher.items()}
