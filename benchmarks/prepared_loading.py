"""How much faster is loading prepared mini-ImageNet (memory-mapped .npy) than decoding its JPEGs?

Both are measured side by side in one run, on the same files, with the same thread pool for decoding,
each repeated (`--repeats`, interleaved), its median reported with its spread and the load average
around it. The caches go to a temporary folder, so the data root may be read-only. Target: >= 20x.

    python benchmarks/prepared_loading.py [--data-root ../shared/data] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Measurement, apply_run_options, interleaved, load_note, machine, marked, run_options  # noqa: E402

from clbench.datasets import miniimagenet  # noqa: E402
from clbench.datasets.cache import decode_images_into  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
    run_options(parser, threads=False)  # decoding uses a pool of every core, not torch's threads
    args = parser.parse_args()
    repeats = apply_run_options(args)
    if miniimagenet.layout(args.data_root) != "csv":
        sys.exit(f"no mini-imagenet/images + CSVs under {args.data_root}: pass --data-root")

    cpu = torch.device("cpu")
    prepare = Measurement("prepare once (decode + write .npy)")
    decode = Measurement("decode JPEGs (unprepared load)")
    opened = Measurement("prepared load (memory-map)")
    read = Measurement("prepared load + read every pixel to RAM")
    with tempfile.TemporaryDirectory(prefix="clbench-bench-") as tmp:
        cache_dir = Path(tmp)
        data = prepare.take(lambda: miniimagenet.load(args.data_root, cache_dir=cache_dir), cpu)
        n = sum(len(p) for p in data.partitions.values())
        size_mb = sum(f.stat().st_size for f in cache_dir.glob("*.npy")) / 2**20
        interleaved([(decode, lambda: decode_all(args.data_root)),
                     (opened, lambda: open_prepared(args.data_root, cache_dir)),
                     (read, lambda: read_prepared(args.data_root, cache_dir))], repeats, cpu)

    print(f"\nmini-ImageNet at {args.data_root}: {n} images, prepared cache {size_mb:.0f} MiB; {machine()}")
    print("  seconds, median [spread]; prepare once is a single measurement")
    for m in (prepare, decode, opened, read):
        faster = f"   {marked(f'{decode.median / m.median:.1f}x faster', decode, m)}" if m in (opened, read) else ""
        print(f"  {m.label + ':':<42} {m.cell(digits=3)}{faster}")
    print("  (prepared reads come from the page cache, as on any second run)")
    print(load_note(repeats))


if __name__ == "__main__":
    main()
