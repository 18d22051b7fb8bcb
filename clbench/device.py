"""Device choice and device-side measurements (synchronisation, peak memory)."""

from __future__ import annotations

import functools
import os
import platform
import resource
import sys
from pathlib import Path

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


def set_deterministic(on: bool = True) -> None:
    """Turn PyTorch's deterministic algorithms on (with the cuBLAS workspace setting they need on CUDA,
    and no cuDNN autotuning) or off, whatever an earlier run in this process chose."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """This processor as a row records it: its model name and the instruction set torch's CPU kernels
    dispatch to, e.g. "AMD EPYC (AVX512)". Math libraries choose kernels by both (MKL by vendor too),
    so a run on another processor may differ in the last bits, and a chaotic learner by much more."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    return f"{model or platform.processor() or platform.machine() or 'unknown'} " \
           f"({torch.backends.cpu.get_cpu_capability()})"


SMALL_IMAGE_PIXELS = 32 * 32
"""Images of at most this many pixels make small models, for which one CPU thread beats a pool."""

DEFAULT_THREADS = torch.get_num_threads()
"""torch's own CPU thread count in this process (one per core, or $OMP_NUM_THREADS), read before any run
changed it."""


def cpu_threads(requested: int | None, image_shape: tuple[int, ...], device: torch.device) -> int:
    """The torch CPU thread count for a run: `requested` when given, else one thread for small images
    on the CPU (thread hand-offs cost more than tiny matrices gain, and a busy machine's cores make
    a pool several times slower) and torch's own default (`DEFAULT_THREADS`) otherwise, whatever an
    earlier run in this process set."""
    if requested is not None:
        return requested
    small = image_shape[-1] * image_shape[-2] <= SMALL_IMAGE_PIXELS
    return 1 if device.type == "cpu" and small else DEFAULT_THREADS
