"""Shared pieces of the benchmark scripts: CIFAR-100-sized synthetic data, the torchvision-style
dataset Avalanche users feed it, the encoder as clbench runs it, repeated timings with the load
average around each, and table printing. Not part of clbench."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clbench.datasets import Dataset, LabeledArrays  # noqa: E402
from clbench.device import synchronize  # noqa: E402
from clbench.inference import channels_last, inference_copy  # noqa: E402

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


class AsClbenchRunsIt(nn.Module):
    """A frozen encoder doing clbench's arithmetic: its `inference_copy` (batch norms folded,
    channels-last) fed channels-last inputs, and with `bf16=True` on CUDA under bf16 autocast (as
    clbench's feature cache). What a peer library is handed for the equal-arithmetic comparison."""

    def __init__(self, encoder: nn.Module, bf16: bool = False) -> None:
        super().__init__()
        self.model = inference_copy(encoder)
        self.bf16 = bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16 and x.device.type == "cuda"):
            return self.model(channels_last(x)).float()


# ---- repeated measurements under a stated load ----------------------------------------------------------
def load_limit() -> int:
    """The 1-minute load average this process alone can explain: the threads it computes with (at most
    the machine's cores). Above it, something else competed for the cores during a measurement."""
    return min(torch.get_num_threads(), os.cpu_count() or 1)


def over_limit(loads: Sequence[float]) -> bool:
    """Whether any of these 1-minute load averages exceeds `load_limit()`."""
    return max(loads) > load_limit()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Measurement:
    """One measurement repeated: its seconds, results and the 1-minute load average before and after each."""

    label: str
    seconds: list[float] = field(default_factory=list)
    loads: list[tuple[float, float]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    def take(self, fn: Callable[[], Any], device: torch.device) -> Any:
        """Time fn() once more (see `timed`), print the seconds and the load around them, return fn's result."""
        return self.record(lambda: timed(fn, device))

    def record(self, fn: Callable[[], tuple[float, Any]]) -> Any:
        """`take` for an fn that times itself (to leave its set-up out) and returns (seconds, result)."""
        before = os.getloadavg()[0]
        seconds, out = fn()
        after = os.getloadavg()[0]
        self.seconds.append(seconds)
        self.loads.append((before, after))
        self.results.append(out)
        print(f"  {self.label}: {seconds:.2f} s (load {before:.2f} -> {after:.2f}"
              f"{', under load' if over_limit((before, after)) else ''})", flush=True)
        return out

    @property
    def median(self) -> float:
        """The median seconds: a repeat's own (the lower middle one of an even count)."""
        return sorted(self.seconds)[(len(self.seconds) - 1) // 2]

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats."""
        return (max(self.seconds) - min(self.seconds)) / self.median

    @property
    def under_load(self) -> bool:
        """Whether the 1-minute load exceeded `load_limit()` before or after any repeat."""
        return any(over_limit(pair) for pair in self.loads)

    @property
    def median_result(self) -> Any:
        """fn's result in the repeat that took the median seconds."""
        return self.results[self.seconds.index(self.median)]

    def cell(self, value: Callable[[float], float] = lambda s: s, digits: int = 2) -> str:
        """'median [spread %]' of the seconds, or of value(seconds) (a rate, say), marked if under load."""
        return marked(f"{value(self.median):,.{digits}f} [{100 * self.spread:.0f}%]", self)


def interleaved(jobs: Sequence[tuple[Measurement, Callable[[], Any]]], repeats: int,
                device: torch.device | None) -> None:
    """Take every measurement `repeats` times, interleaved, the order rotated each round (the first
    round in the given order), so that a neighbour's passing load falls on all of them alike.
    device None: the fns time themselves (see `Measurement.record`)."""
    for r in range(repeats):
        k = r % len(jobs)
        for measurement, fn in list(jobs[k:]) + list(jobs[:k]):
            if device is None:
                measurement.record(fn)
            else:
                measurement.take(fn, device)


def marked(figure: str, *measurements: Measurement) -> str:
    """The figure, followed by 'under load' when any measurement it comes from was taken under load."""
    return figure + (" under load" if any(m.under_load for m in measurements) else "")


def at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_options(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    """--repeats and (where torch does the work) --threads, the same in every script."""
    parser.add_argument("--repeats", type=at_least_one, default=None,
                        help="repeats of every measurement, interleaved; the median counts (default 3, --quick 2)")
    if threads:
        parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def apply_run_options(args: argparse.Namespace) -> int:
    """Set torch's threads, print the load average at the start, return the number of repeats."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    print(f"# load average at the start: {load_average()} (1, 5, 15 min)", flush=True)
    return args.repeats or (2 if getattr(args, "quick", False) else 3)


def load_note(repeats: int) -> str:
    """The closing line of every script: how its figures were taken."""
    return (f"# median of {repeats} interleaved repeats (of an even count, the lower middle one); [n%]: their spread, "
            f"(max - min) / median. 'under load': the "
            f"1-minute load average exceeded {load_limit()} (this process's threads, at most the cores) before or "
            f"after a repeat, so something else competed for the cores. Load average at the end: {load_average()}")


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
