"""Device choice and device-side measurements (synchronisation, peak memory)."""

from __future__ import annotations

import os
import resource
import sys

import torch

from clbench.errors import ClbenchError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an unavailable device is a one-line error."""
    if isinstance(device, torch.device):
        return device
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ClbenchError(f"unknown device '{name}' (accepted: {', '.join(DEVICES)})")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ClbenchError("--device cuda was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ClbenchError("--device mps was asked for, but MPS is not available (use --device cpu or auto)")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory (CUDA), else the process's peak resident memory, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def set_deterministic() -> None:
    """PyTorch's deterministic algorithms (and the cuBLAS workspace setting they need on CUDA)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


SMALL_IMAGE_PIXELS = 32 * 32
"""Images of at most this many pixels make small models, for which one CPU thread beats a pool."""


def cpu_threads(requested: int | None, image_shape: tuple[int, ...], device: torch.device) -> int:
    """The torch CPU thread count for a run: `requested` when given, else one thread for small images
    on the CPU (thread hand-offs cost more than tiny matrices gain, and a busy machine's cores make
    a pool several times slower) and torch's own default (one per core) otherwise."""
    if requested is not None:
        return requested
    small = image_shape[-1] * image_shape[-2] <= SMALL_IMAGE_PIXELS
    return 1 if device.type == "cpu" and small else torch.get_num_threads()
