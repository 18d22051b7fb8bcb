"""Image transforms on the device, batched (no per-sample Python): normalisation, resizing,
train-time augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding`, crop back to the input size at a random offset per sample, and flip
    half of the samples horizontally (the CIFAR / mini-ImageNet standard), on uint8 N x C x H x W.

    Random numbers come from `generator` (a CPU generator, so the draws are the same on any device).
    """
    n, c, h, w = images.shape
    device = images.device
    flip = torch.rand(n, generator=generator) < 0.5
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(device)
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = (offsets[0, :, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (offsets[1, :, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        channel = torch.arange(c, device=device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    flip = flip.to(device)[:, None, None, None]
    return torch.where(flip, images.flip(3), images)


def resized_shape(shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The C x H x W shape of images of `shape` after `resize` to `size` (0: not resized)."""
    return (shape[0], size, size) if size else tuple(shape)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of float N x C x H x W to size x size; a no-op when it already fits."""
    if size <= 0 or images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ImageTransform:
    """uint8 N x C x H x W -> float: (x / 255 - mean) / std, then resized to `size` (0 keeps it).

    The statistics live on each device they are used on, created once.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device not in self._stats:
            as_tensor = lambda v: torch.tensor(v, device=images.device).view(1, -1, 1, 1) * 255  # noqa: E731
            self._stats[images.device] = (as_tensor(self.mean), as_tensor(self.std))
        mean, std = self._stats[images.device]
        return resize((images.float() - mean) / std, self.size)
