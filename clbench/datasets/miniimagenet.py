"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split) from `<root>/mini-imagenet/`.

Two layouts are read: `images/*.jpg` with `train.csv`, `val.csv`, `test.csv` (`filename,label` rows,
label = wnid), decoded once into `prepared/<split>-<hash>.npy`; or the pickle caches
`mini-imagenet-cache-{train,val,test}.pkl` (`image_data` N x 84 x 84 x 3, `class_dict` wnid -> indices).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clbench.datasets import safe_pickle
from clbench.datasets.arrays import Dataset, LabeledArrays, int_vector, uint8_mismatch
from clbench.datasets.cache import cache_key, cached_images
from clbench.errors import ClbenchError

FOLDER = "mini-imagenet"
SPLITS = ("train", "val", "test")
SIZE = 84
OFFICIAL_ROWS = {"train": 38_400, "val": 9_600, "test": 12_000}
OFFICIAL_MD5 = {
    "train": "9525e1538f67719f18f1936bf8d0782d",
    "val": "ce315ce99b41fbf84fa6acd69315d918",
    "test": "5b89df877c6cbe5d291e43118a2a9591",
}
HOW_TO_GET = (
    "the split CSVs are in github.com/twitter/meta-learning-lstm (data/miniImagenet), "
    "the 84x84 images are made from ILSVRC-2012 (image-net.org)"
)


@dataclass(frozen=True)
class ImageList:
    """One partition given by a `filename,label` CSV over a flat image folder, and its cache file."""

    csv: Path
    filenames: np.ndarray  # unicode, N
    wnids: np.ndarray  # unicode, N
    cache: Path

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.filenames), 3, SIZE, SIZE)


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The `filename` and `label` columns of a mini-ImageNet split CSV, as unicode arrays."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the header
            rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    except FileNotFoundError:
        raise ClbenchError(f"split file {path} not found") from None
    except OSError as e:
        raise ClbenchError(f"split file {path} cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        why = f"not UTF-8 text at byte {e.start}" if isinstance(e, UnicodeDecodeError) else str(e)
        raise ClbenchError(f"split file {path} is corrupt ({why}): replace it with the original file") from None
    if not rows or rows[0] != ["filename", "label"]:
        raise ClbenchError(f"split file {path} is corrupt (the first line must be 'filename,label')")
    if len(rows) == 1:
        raise ClbenchError(f"split file {path} lists no images (it holds only its header line)")
    bad = next((i for i, row in enumerate(rows[1:], start=2) if len(row) != 2 or not row[0] or not row[1]), None)
    if bad is not None:
        raise ClbenchError(f"split file {path} is corrupt (line {bad} is not 'filename,label')")
    table = np.array(rows[1:], dtype=str).reshape(-1, 2)
    return table[:, 0], table[:, 1]


def class_order(columns: Sequence[np.ndarray]) -> tuple[str, ...]:
    """Class names in order of first appearance, column after column."""
    names: list[str] = []
    for column in columns:
        uniq, first = np.unique(column, return_index=True)
        new = uniq[np.argsort(first)]
        names.extend(str(n) for n in new[~np.isin(new, names)])
    return tuple(names)


def encode(column: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """int64 class indices of the names in `column` (all of which must be in `class_names`)."""
    names = np.array(class_names)
    order = np.argsort(names)
    return order[np.searchsorted(names, column, sorter=order)].astype(np.int64)


def image_list(csv_path: Path, cache_dir: Path, tag: str) -> ImageList:
    """Read a split CSV and name its cache file after a hash of its file list."""
    filenames, wnids = read_csv(csv_path)
    if len(np.unique(filenames)) != len(filenames):
        raise ClbenchError(f"split file {csv_path} is corrupt (it names a file more than once)")
    return ImageList(csv_path, filenames, wnids, Path(cache_dir) / f"{tag}-{cache_key(filenames.tolist(), SIZE)}.npy")


def check_images(lists: Sequence[ImageList], image_dir: Path) -> None:
    """One error naming the CSV and a missing file when any CSV names an image absent from `image_dir`."""
    if not Path(image_dir).is_dir():
        raise ClbenchError(f"mini-ImageNet image folder {image_dir} not found ({HOW_TO_GET})")
    try:
        present = np.array(os.listdir(image_dir), dtype=str)
    except OSError as e:
        raise ClbenchError(f"image folder {image_dir} cannot be read ({e})") from None
    for item in lists:
        missing = item.filenames[~np.isin(item.filenames, present)]
        if len(missing):
            raise ClbenchError(
                f"{item.csv} names {len(missing)} image(s) absent from {image_dir}, e.g. {missing[0]}: "
                "add the images or use a CSV that lists only present ones"
            )


def load_images(item: ImageList, image_dir: Path) -> np.ndarray:
    """The partition's N x 3 x 84 x 84 uint8 images: memory-mapped cache, decoded first if absent."""
    if not item.cache.exists():
        check_images([item], image_dir)
    files = np.char.add(f"{image_dir}{os.sep}", item.filenames)
    return cached_images(files, item.cache, SIZE, desc=f"preparing {item.cache.name}")


def layout(root: Path) -> str | None:
    """'csv', 'pickle' or None: which mini-ImageNet layout `<root>/mini-imagenet` holds."""
    folder = Path(root) / FOLDER
    if (folder / "images").is_dir() and any((folder / f"{s}.csv").exists() for s in SPLITS):
        return "csv"
    if any((folder / f"mini-imagenet-cache-{s}.pkl").exists() for s in SPLITS):
        return "pickle"
    return None


def default_cache_dir(root: Path) -> Path:
    return Path(root) / FOLDER / "prepared"


def image_lists(root: Path, cache_dir: Path | None = None) -> dict[str, ImageList]:
    """The three split CSVs of the CSV layout, read and checked, with their cache files."""
    folder = Path(root) / FOLDER
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(root)
    return {s: image_list(folder / f"{s}.csv", cache_dir, s) for s in SPLITS}


def _missing(root: Path) -> ClbenchError:
    folder = Path(root) / FOLDER
    return ClbenchError(
        f"mini-ImageNet not found: expected {folder}/images/*.jpg with train.csv, val.csv, test.csv, "
        f"or {folder}/mini-imagenet-cache-{{train,val,test}}.pkl ({HOW_TO_GET})"
    )


def _load_csv_layout(root: Path, cache_dir: Path | None) -> Dataset:
    lists = image_lists(root, cache_dir)
    names = class_order([lists[s].wnids for s in SPLITS])
    image_dir = Path(root) / FOLDER / "images"
    partitions = {
        s: LabeledArrays(load_images(item, image_dir), encode(item.wnids, names), names, {"filename": item.filenames})
        for s, item in lists.items()
    }
    return Dataset(name="mini-imagenet", partitions=partitions)


PICKLE_FIX = f"delete it and get it again ({HOW_TO_GET})"


def _bad_pickle(path: Path, why: str) -> ClbenchError:
    return ClbenchError(f"mini-ImageNet pickle {path} is corrupt ({why}): {PICKLE_FIX}")


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 84 x 84 x 3) and per-sample wnids of one pickle cache."""
    try:
        obj = safe_pickle.load(path, "mini-ImageNet pickle", PICKLE_FIX)
    except FileNotFoundError:
        raise ClbenchError(f"mini-ImageNet pickle {path} not found (the pickle layout needs all three)") from None
    if not isinstance(obj, dict) or "image_data" not in obj or not isinstance(obj.get("class_dict"), dict):
        raise _bad_pickle(path, "expected a dict with image_data and class_dict, wnid -> image indices")
    data = obj["image_data"]
    found = uint8_mismatch(data, (SIZE, SIZE, 3))
    if found:
        raise _bad_pickle(path, f"image_data is {found}, expected a uint8 N x 84 x 84 x 3 array")
    if not len(data):
        raise _bad_pickle(path, "it holds no images")
    wnids = np.full(len(data), "", dtype=object)
    counts = np.zeros(len(data), dtype=np.int64)
    for name, indices in obj["class_dict"].items():
        idx = int_vector(indices)
        if idx is None or not isinstance(name, (str, bytes)):
            raise _bad_pickle(path, f"class_dict entry {name!r} is not a class name with a list of image indices")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(data)):
            raise _bad_pickle(path, f"class_dict indices outside 0..{len(data) - 1}")
        wnids[idx] = name.decode("latin1") if isinstance(name, bytes) else name
        np.add.at(counts, idx, 1)
    if (counts != 1).any():
        raise _bad_pickle(path, "class_dict does not give every image exactly one class")
    return np.ascontiguousarray(data.transpose(0, 3, 1, 2)), wnids.astype(str)


def _load_pickle_layout(root: Path) -> Dataset:
    folder = Path(root) / FOLDER
    parts = {s: _read_pickle(folder / f"mini-imagenet-cache-{s}.pkl") for s in SPLITS}
    names = class_order([parts[s][1] for s in SPLITS])
    partitions = {s: LabeledArrays(images, encode(wnids, names), names) for s, (images, wnids) in parts.items()}
    return Dataset(name="mini-imagenet", partitions=partitions)


def load(root: Path, cache_dir: Path | None = None) -> Dataset:
    """mini-ImageNet: "train"/"val"/"test" (64/16/20 classes) of 3 x 84 x 84 uint8 images.

    Class ids 0..99 follow first appearance in train.csv, then val.csv, then test.csv; class names are
    wnids; `metadata["filename"]` holds each image's file name (CSV layout only). Decoded images are
    cached under `cache_dir` (default `<root>/mini-imagenet/prepared`) and memory-mapped afterwards.
    """
    kind = layout(Path(root))
    if kind == "csv":
        return _load_csv_layout(Path(root), cache_dir)
    if kind == "pickle":
        return _load_pickle_layout(Path(root))
    raise _missing(Path(root))
