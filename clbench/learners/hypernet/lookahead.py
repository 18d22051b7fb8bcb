"""The look-ahead of an optimizer step: the change `Adam.step()` would make, without making it."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch


@torch.no_grad()
def adam_delta(optimizer: torch.optim.Adam) -> list[torch.Tensor]:
    """For every parameter of `optimizer` (plain Adam: no weight decay, amsgrad or maximize), in
    param-group order, the change its next `step()` would make given the current `.grad` (zero for a
    parameter without one): the moments updated, bias-corrected, -lr * m_hat / (sqrt(v_hat) + eps)."""
    deltas = []
    for group in optimizer.param_groups:
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                deltas.append(torch.zeros_like(p))
                continue
            state, g = optimizer.state.get(p), p.grad
            if state:
                step = float(state["step"]) + 1
                m, v = state["exp_avg"] * b1 + (1 - b1) * g, state["exp_avg_sq"] * b2 + (1 - b2) * g * g
            else:
                step, m, v = 1.0, (1 - b1) * g, (1 - b2) * g * g
            denom = v.sqrt() / math.sqrt(1 - b2**step) + eps
            deltas.append(-lr / (1 - b1**step) * m / denom)
    return deltas


@contextlib.contextmanager
def shifted(params: list[torch.nn.Parameter], deltas: list[torch.Tensor]) -> Iterator[None]:
    """Within the block each parameter holds its value plus its (constant) delta: gradients computed
    there are taken at the shifted point and accumulate in `.grad` as usual; the exact values come back."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, d in zip(params, deltas):
            p.add_(d)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
