"""How much faster is loading prepared mini-ImageNet (memory-mapped .npy) than decoding its JPEGs?

Both are measured side by side in one run, on the same files, with the same thread pool for decoding.
The caches go to a temporary folder, so the data root may be read-only. Target: >= 20x.

    python benchmarks/prepared_loading.py [--data-root ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clbench.datasets import miniimagenet  # noqa: E402
from clbench.datasets.cache import decode_images_into  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decode_all(root: Path) -> int:
    """The unprepared path: read the CSVs, decode every JPEG into memory."""
    image_dir = root / miniimagenet.FOLDER / "images"
    total = 0
    for item in miniimagenet.image_lists(root, Path(tempfile.gettempdir())).values():
        out = np.empty(item.shape, dtype=np.uint8)
        decode_images_into(np.char.add(f"{image_dir}{os.sep}", item.filenames), out, miniimagenet.SIZE)
        total += len(out)
    return total


def open_prepared(root: Path, cache_dir: Path) -> None:
    """The prepared path: read the CSVs, memory-map the caches (pages are read lazily, on use)."""
    miniimagenet.load(root, cache_dir=cache_dir)


def read_prepared(root: Path, cache_dir: Path) -> None:
    """The prepared path, then every pixel copied into RAM (what a run that uses all images pays)."""
    data = miniimagenet.load(root, cache_dir=cache_dir)
    for part in data.partitions.values():
        np.array(part.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="folder holding mini-imagenet/")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is kept")
    args = parser.parse_args()
    if miniimagenet.layout(args.data_root) != "csv":
        sys.exit(f"no mini-imagenet/images + CSVs under {args.data_root}: pass --data-root")

    with tempfile.TemporaryDirectory(prefix="clbench-bench-") as tmp:
        cache_dir = Path(tmp)
        start = time.perf_counter()
        data = miniimagenet.load(args.data_root, cache_dir=cache_dir)
        prepare_s = time.perf_counter() - start
        n = sum(len(p) for p in data.partitions.values())
        size_mb = sum(f.stat().st_size for f in cache_dir.glob("*.npy")) / 2**20

        decode_s = best(lambda: decode_all(args.data_root), args.repeats)
        open_s = best(lambda: open_prepared(args.data_root, cache_dir), max(args.repeats, 5))
        read_s = best(lambda: read_prepared(args.data_root, cache_dir), args.repeats)

    print(f"mini-ImageNet at {args.data_root}: {n} images, prepared cache {size_mb:.0f} MiB, {os.cpu_count()} CPUs")
    print(f"  prepare once (decode + write .npy):       {prepare_s:8.3f} s")
    print(f"  decode JPEGs (unprepared load):           {decode_s:8.3f} s")
    print(f"  prepared load (memory-map):               {open_s:8.3f} s   {decode_s / open_s:7.1f}x faster")
    print(f"  prepared load + read every pixel to RAM:  {read_s:8.3f} s   {decode_s / read_s:7.1f}x faster")
    print("  (best of repeats; prepared reads come from the page cache, as on any second run)")


if __name__ == "__main__":
    main()
