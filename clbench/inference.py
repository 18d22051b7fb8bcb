"""Frozen networks made faster for inference: batch norms folded into their convolutions, channels-last.

Both are exact up to float rounding and apply on every device: on 2 CPU cores a Conv-4 at 84 px
encodes about 2.4x as many images per second (fold + channels-last) as the same module as built.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def inference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` for inference: eval mode, no gradients, every `Conv2d` immediately
    followed by a `BatchNorm2d` inside an `nn.Sequential` folded into one convolution (the batch
    norm's running statistics and affine parameters absorbed), parameters in channels-last layout.
    `model` itself is left untouched (its state dict keeps its own keys and values)."""
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    _fold_batch_norms(frozen)
    return frozen.to(memory_format=torch.channels_last)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (N x C x H x W) in channels-last layout, what `inference_copy` models run fastest on;
    other tensors unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _fold_batch_norms(module: nn.Module) -> None:
    for child in module.children():
        _fold_batch_norms(child)
    if not isinstance(module, nn.Sequential):
        return
    layers = list(module)
    for i in range(len(layers) - 1):
        conv, norm = layers[i], layers[i + 1]
        if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.track_running_stats:
            module[i] = fuse_conv_bn_eval(conv, norm)
            module[i + 1] = nn.Identity()
