"""Shared pieces of the benchmark scripts: CIFAR-100-sized synthetic data, the torchvision-style
dataset Avalanche users feed it, timing and table printing. Not part of clbench."""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clbench.datasets import Dataset, LabeledArrays  # noqa: E402
from clbench.device import synchronize  # noqa: E402

N_CLASSES = 100
CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)


def synthetic_cifar100(n_train: int = 50_000, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """uint8 N x 3 x 32 x 32 images of CIFAR-100's shape, 100 balanced classes in shuffled order.

    Class c is a per-class colour plus uniform noise (+-48), so that the learners' accuracies mean
    something and can be compared between clbench and Avalanche; the arithmetic is what matters.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(48, 208, (N_CLASSES, 3), dtype=np.int16)
    names = tuple(f"class{c:02d}" for c in range(N_CLASSES))

    def part(n: int) -> LabeledArrays:
        labels = rng.permutation(np.arange(n) % N_CLASSES).astype(np.int64)
        images = np.empty((n, 3, 32, 32), dtype=np.uint8)
        for start in range(0, n, 5000):  # in chunks: small int16 temporaries
            stop = min(n, start + 5000)
            noise = rng.integers(-48, 49, (stop - start, 3, 32, 32), dtype=np.int16)
            images[start:stop] = np.clip(colours[labels[start:stop], :, None, None] + noise, 0, 255)
        return LabeledArrays(images, labels, names)

    return Dataset("synthetic-cifar100", {"train": part(n_train), "test": part(n_test)})


class ArrayImages(torch.utils.data.Dataset):
    """What torchvision's CIFAR100 dataset is to Avalanche users: (PIL image, int label) pairs with a
    `targets` list, the transform applied per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # N x H x W x C, as torchvision holds it
        self.targets = [int(t) for t in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.images[i])
        return (self.transform(image) if self.transform else image), self.targets[i]


def quiet_avalanche() -> None:
    """Import Avalanche without its optional-dependency warnings cluttering the table."""
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import avalanche  # noqa: F401

    show = warnings.showwarning

    def show_unless_avalanche(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        # Avalanche's deprecation decorator re-enables its warnings on every call: drop them here
        if "avalanche" not in str(filename) and not issubclass(category, DeprecationWarning):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_unless_avalanche


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of fn(), the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def machine() -> str:
    """A one-line description of where the figures were measured."""
    if torch.cuda.is_available():
        accel = torch.cuda.get_device_name(0)
    else:
        accel = "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {accel}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
