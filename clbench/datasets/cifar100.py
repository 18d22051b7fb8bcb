"""CIFAR-100 from the official "python version" files at `<root>/cifar-100-python/{train,test,meta}`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from clbench.datasets import safe_pickle
from clbench.datasets.arrays import Dataset, LabeledArrays, int_vector, uint8_mismatch
from clbench.errors import ClbenchError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
MD5 = {  # the files of the official release (as listed by torchvision)
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
NUM_CLASSES = 100


def _download(root: Path) -> None:
    """Fetch and extract the official archive with torchvision (which verifies its md5)."""
    from torchvision.datasets import CIFAR100

    CIFAR100(str(root), train=True, download=True)


def _missing(path: Path, why: str = "") -> ClbenchError:
    return ClbenchError(
        f"CIFAR-100 file {path} not found{why}: download {URL} and extract it into {path.parent.parent} "
        f"(it creates {FOLDER}/ with train, test and meta)"
    )


def _corrupt(path: Path, why: str) -> ClbenchError:
    return ClbenchError(f"CIFAR-100 file {path} is corrupt ({why}): delete it and get it again from {URL}")


def _unpickle(path: Path) -> dict:
    try:
        obj = safe_pickle.load(path, "CIFAR-100 file", f"delete it and get it again from {URL}")
    except FileNotFoundError:
        raise _missing(path) from None
    if not isinstance(obj, dict):
        raise _corrupt(path, f"holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(obj: dict, key: str, path: Path):
    if key not in obj:
        raise _corrupt(path, f"no '{key}' entry")
    return obj[key]


def _partition(path: Path, class_names: tuple[str, ...]) -> LabeledArrays:
    obj = _unpickle(path)
    data = _field(obj, "data", path)
    found = uint8_mismatch(data, (3 * 32 * 32,))
    if found:
        raise _corrupt(path, f"data is {found}, expected a uint8 N x 3072 array")
    if not len(data):
        raise _corrupt(path, "it holds no images")
    labels = int_vector(_field(obj, "fine_labels", path))
    if labels is None or len(labels) != len(data):
        raise _corrupt(path, f"fine_labels is not a list of {len(data)} integers, one per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise _corrupt(path, f"fine_labels outside 0..{NUM_CLASSES - 1}")
    images = data.reshape(len(data), 3, 32, 32)  # rows are R, G, B planes, each 32 x 32 row-major
    return LabeledArrays(images, labels, class_names)


def _class_names(path: Path) -> tuple[str, ...]:
    names = _field(_unpickle(path), "fine_label_names", path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise _corrupt(path, "fine_label_names is not a list of names")
    if len(names) != NUM_CLASSES:
        raise _corrupt(path, f"{len(names)} fine_label_names, expected {NUM_CLASSES}")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def md5_ok(root: Path) -> bool:
    """Whether all three files are byte-identical to the official release."""
    folder = Path(root) / FOLDER
    for name, expected in MD5.items():
        with open(folder / name, "rb") as f:
            if hashlib.file_digest(f, "md5").hexdigest() != expected:
                return False
    return True


def load(root: Path, download: bool = True) -> Dataset:
    """CIFAR-100: "train" (50,000) and "test" (10,000) partitions of 3 x 32 x 32 uint8 images, 100 classes.

    When the folder is absent and `download` is true, torchvision fetches and verifies the official
    archive; without network this fails with one line saying where to put which file.
    """
    root = Path(root)
    folder = root / FOLDER
    why = ""
    if download and not all((folder / name).exists() for name in MD5):
        try:
            _download(root)
        except Exception as e:  # no network, proxy, disk: the message below says what to do by hand
            why = f" and the automatic download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    for name in ("meta", "train", "test"):
        if not (folder / name).exists():
            raise _missing(folder / name, why)
    names = _class_names(folder / "meta")
    return Dataset(
        name="cifar100",
        partitions={"train": _partition(folder / "train", names), "test": _partition(folder / "test", names)},
    )
