"""Fixtures that write tiny datasets in the exact official on-disk formats, and locate the shared real data."""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clbench.datasets import cifar100

# tiny mini-ImageNet: wnids listed out of sorted order so that "first appearance" is really tested
MINI_CLASSES = {
    "train": ["n03000003", "n01000001", "n02000002"],
    "val": ["n05000005", "n04000004"],
    "test": ["n06000006", "n00000007"],
}
MINI_PER_CLASS = 3
ODD_SIZE_FILE = "n0100000100000002.jpg"  # written at 100 x 90, so the loader must resize it

# tiny FSCIL partition: 3 base classes then 8 sessions of 1 new class each, 2 train + 1 test image per class
FSCIL_CLASSES = [f"n1{k:07d}" for k in range(11)]
FSCIL_BASE = 3


def color(name: str) -> tuple[int, int, int]:
    """A solid colour derived from a file name, so decoded pixels can be checked (JPEG keeps it to +-few)."""
    h = zlib.crc32(name.encode()) % (200**3)
    return (20 + h % 200, 20 + (h // 200) % 200, 20 + h // 40000)


def write_jpeg(path: Path, size: tuple[int, int] = (84, 84)) -> None:
    Image.new("RGB", size, color(path.name)).save(path, quality=95)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("filename,label\n" + "".join(f"{f},{w}\n" for f, w in rows))


def mini_rows(split: str) -> list[tuple[str, str]]:
    return [(f"{w}{i:08d}.jpg", w) for w in MINI_CLASSES[split] for i in range(1, MINI_PER_CLASS + 1)]


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """No test may reach the network: the CIFAR-100 download behaves as on a machine without one."""

    def offline(root):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(cifar100, "_download", offline)


def write_cifar100(root: Path, per_class_train: int = 2, per_class_test: int = 1, bytes_keys: bool = True) -> dict:
    """The official python-version layout: pickled dicts `data` (N x 3072 uint8) and `fine_labels`."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        labels = np.tile(np.arange(100), per_class)  # interleaved, as in the real files
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        entry = {key("data"): data, key("fine_labels"): labels.tolist(), key("coarse_labels"): (labels // 5).tolist(),
                 key("filenames"): [f"img_{i}.png".encode() for i in range(len(labels))], key("batch_label"): b"batch"}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        arrays[split] = (data, labels)
    meta = {key("fine_label_names"): [f"class_{i:02d}" for i in range(100)],
            key("coarse_label_names"): [f"super_{i:02d}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return arrays


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path


def write_miniimagenet(root: Path) -> Path:
    """`mini-imagenet/images/*.jpg` plus `train.csv`, `val.csv`, `test.csv` (filename,label)."""
    folder = root / "mini-imagenet"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split in MINI_CLASSES:
        rows = mini_rows(split)
        for name, _ in rows:
            write_jpeg(folder / "images" / name, (100, 90) if name == ODD_SIZE_FILE else (84, 84))
        write_csv(folder / f"{split}.csv", rows)
    return folder


@pytest.fixture
def mini_root(tmp_path: Path) -> Path:
    write_miniimagenet(tmp_path)
    return tmp_path


def write_mini_pickles(root: Path) -> dict:
    """The pickle caches: dict(image_data=N x 84 x 84 x 3 uint8, class_dict=wnid -> indices)."""
    folder = root / "mini-imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for split, wnids in MINI_CLASSES.items():
        images = rng.integers(0, 256, size=(len(wnids) * 2, 84, 84, 3), dtype=np.uint8)
        # dict insertion order reversed relative to where the classes first appear in image_data
        class_dict = {w: [2 * k, 2 * k + 1] for k, w in reversed(list(enumerate(wnids)))}
        with open(folder / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
        written[split] = images
    return written


def fscil_rows() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train = [(f"{w}{i:08d}.jpg", w) for w in FSCIL_CLASSES for i in (1, 2)]
    test = [(f"{w}{3:08d}.jpg", w) for w in FSCIL_CLASSES]
    return train, test


def write_fscil(root: Path) -> Path:
    """FSCIL mini-ImageNet lists (train.csv, test.csv, session_1..9.txt) and their images, plus CIFAR sessions."""
    images = root / "mini-imagenet" / "images"
    images.mkdir(parents=True, exist_ok=True)
    folder = root / "fscil-splits" / "mini_imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = fscil_rows()
    for name, _ in train + test:
        write_jpeg(images / name)
    write_csv(folder / "train.csv", train)
    write_csv(folder / "test.csv", test)
    path = lambda f, w: f"MINI-ImageNet/train/{w}/{f}\n"  # noqa: E731
    base = [r for r in train if r[1] in FSCIL_CLASSES[:FSCIL_BASE]]
    (folder / "session_1.txt").write_text("".join(path(*r) for r in base[::-1]))
    for k, wnid in enumerate(FSCIL_CLASSES[FSCIL_BASE:], start=2):
        (folder / f"session_{k}.txt").write_text("".join(path(*r) for r in train if r[1] == wnid))
    write_cifar_sessions(root)
    return folder


def write_cifar_sessions(root: Path, sessions: list[list[int]] | None = None) -> Path:
    folder = root / "fscil-splits" / "cifar100"
    folder.mkdir(parents=True, exist_ok=True)
    if sessions is None:  # indices into the tiny CIFAR-100 train set of write_cifar100 (200 images)
        sessions = [list(range(0, 120))] + [list(range(120 + 10 * k, 130 + 10 * k)) for k in range(8)]
    for k, rows in enumerate(sessions, start=1):
        (folder / f"session_{k}.txt").write_text("".join(f"{i}\n" for i in rows))
    return folder


@pytest.fixture
def fscil_root(tmp_path: Path) -> Path:
    write_fscil(tmp_path)
    return tmp_path


def shared_data_dir() -> Path:
    """The machine's shared real data (`CLBENCH_SHARED_DATA` overrides); may not exist."""
    env = os.environ.get("CLBENCH_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"no shared real data at {root}")
    return root


@pytest.fixture
def fmt() -> SimpleNamespace:
    """The writers and constants above, for test modules (tests/ is not a package, so no imports from here)."""
    return SimpleNamespace(
        write_cifar100=write_cifar100, write_miniimagenet=write_miniimagenet, write_mini_pickles=write_mini_pickles,
        write_fscil=write_fscil, write_cifar_sessions=write_cifar_sessions, write_csv=write_csv, write_jpeg=write_jpeg,
        mini_rows=mini_rows, fscil_rows=fscil_rows, color=color, MINI_CLASSES=MINI_CLASSES,
        MINI_PER_CLASS=MINI_PER_CLASS, ODD_SIZE_FILE=ODD_SIZE_FILE, FSCIL_CLASSES=FSCIL_CLASSES, FSCIL_BASE=FSCIL_BASE,
    )
