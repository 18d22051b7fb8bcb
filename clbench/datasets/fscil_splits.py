"""The TOPIC/CEC few-shot class-incremental session lists at `<root>/fscil-splits/{cifar100,mini_imagenet}/`.

`cifar100/session_{1..9}.txt` hold indices into the CIFAR-100 training set; `mini_imagenet/session_*.txt`
hold paths `MINI-ImageNet/train/<wnid>/<file>` matched by file name against the FSCIL `train.csv`, and
`train.csv`/`test.csv` give the FSCIL partition of all 100 classes (class index = first appearance in train.csv).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clbench.datasets import cifar100, miniimagenet
from clbench.datasets.arrays import Dataset, LabeledArrays
from clbench.datasets.miniimagenet import ImageList
from clbench.errors import ClbenchError

FOLDER = "fscil-splits"
SESSIONS = 9
FULL_SESSION_1_ROWS = 30_000  # 60 base classes x 500 images, in both benchmarks
SESSION_1_MD5 = {"cifar100": "3723f5b5d8fbaf2077998c9a13f086f2", "mini_imagenet": "81d882dbcc21138ea337248b5aaabc31"}
CEC = "github.com/icoz69/CEC-CVPR2021"


def session_files(root: Path, benchmark: str) -> list[Path]:
    """`<root>/fscil-splits/<benchmark>/session_1.txt` .. `session_9.txt`."""
    return [Path(root) / FOLDER / benchmark / f"session_{k}.txt" for k in range(1, SESSIONS + 1)]


def read_session_lines(path: Path, benchmark: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClbenchError(
            f"FSCIL session list {path} not found: copy session_1.txt .. session_{SESSIONS}.txt "
            f"from {CEC} (folder data/index_list/{benchmark}) into {path.parent}"
        ) from None
    try:
        lines = np.array([line.strip() for line in data.decode("utf-8").splitlines() if line.strip()], dtype=str)
    except UnicodeDecodeError:
        raise ClbenchError(f"FSCIL session list {path} is corrupt (not text)") from None
    if len(lines) == 0:
        raise ClbenchError(f"FSCIL session list {path} is empty")
    if path.name == "session_1.txt" and len(lines) == FULL_SESSION_1_ROWS:
        md5 = hashlib.md5(data).hexdigest()
        if md5 != SESSION_1_MD5[benchmark]:
            raise ClbenchError(
                f"FSCIL session list {path} has the official {FULL_SESSION_1_ROWS} rows but md5 {md5} "
                f"(expected {SESSION_1_MD5[benchmark]}): get it again from {CEC} (data/index_list/{benchmark})"
            )
    return lines


def _check_unique(rows: list[np.ndarray], files: list[Path], what: str) -> None:
    allrows = np.concatenate(rows)
    uniq, counts = np.unique(allrows, return_counts=True)
    if (counts > 1).any():
        first = uniq[counts > 1][0]
        where = [f.name for f, r in zip(files, rows) if (r == first).any()]
        raise ClbenchError(
            f"FSCIL session lists in {files[0].parent} are corrupt ({what} {first} appears more than once: "
            f"{', '.join(where)})"
        )


def load_cifar100_sessions(root: Path) -> list[np.ndarray]:
    """The 9 CIFAR-100 FSCIL sessions as int64 arrays of indices into the CIFAR-100 training set."""
    files = session_files(root, "cifar100")
    sessions = []
    for path in files:
        lines = read_session_lines(path, "cifar100")
        if not np.char.isdigit(lines).all():
            bad = lines[~np.char.isdigit(lines)][0]
            raise ClbenchError(f"FSCIL session list {path} is corrupt ('{bad}' is not a training-set index)")
        rows = lines.astype(np.int64)
        if rows.max() >= 50_000:
            raise ClbenchError(f"FSCIL session list {path} is corrupt (index {rows.max()} is beyond the 50,000 images)")
        sessions.append(rows)
    _check_unique(sessions, files, "index")
    return sessions


def load_cifar100_fscil(root: Path, download: bool = True) -> Dataset:
    """CIFAR-100 with `index_lists["sessions"]`: the 9 FSCIL sessions as row indices into "train"."""
    sessions = load_cifar100_sessions(root)
    data = cifar100.load(root, download=download)
    n = len(data.partition("train"))
    if max(int(s.max()) for s in sessions) >= n:
        folder = Path(root) / FOLDER / "cifar100"
        raise ClbenchError(f"FSCIL session lists in {folder} index beyond the {n} CIFAR-100 training images found")
    return Dataset(name="cifar100-fscil", partitions=data.partitions, index_lists={"sessions": sessions})


@dataclass(frozen=True)
class MiniImageNetFscil:
    """The checked FSCIL lists of mini-ImageNet: train/test image lists and session rows into train."""

    train: ImageList
    test: ImageList
    sessions: list[np.ndarray]
    class_names: tuple[str, ...]


def missing_lists_error(folder: Path) -> ClbenchError:
    return ClbenchError(
        f"FSCIL mini-ImageNet lists not found in {folder}: put there train.csv and test.csv (the FSCIL split, "
        f"miniimagenet/split of the CEC/TOPIC data release) and session_1.txt .. session_{SESSIONS}.txt "
        f"({CEC}, folder data/index_list/mini_imagenet)"
    )


def miniimagenet_lists(root: Path, cache_dir: Path | None = None) -> MiniImageNetFscil:
    """Read and cross-check the FSCIL CSVs and session lists of mini-ImageNet (no image is opened)."""
    folder = Path(root) / FOLDER / "mini_imagenet"
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        raise missing_lists_error(folder)
    cache_dir = Path(cache_dir) if cache_dir else miniimagenet.default_cache_dir(root)
    train = miniimagenet.image_list(folder / "train.csv", cache_dir, "fscil-train")
    test = miniimagenet.image_list(folder / "test.csv", cache_dir, "fscil-test")
    names = miniimagenet.class_order([train.wnids])
    unknown = test.wnids[~np.isin(test.wnids, names)]
    if len(unknown):
        raise ClbenchError(f"{test.csv} is corrupt (class {unknown[0]} is not in {train.csv})")
    order = np.argsort(train.filenames)
    sorted_names = train.filenames[order]
    files = session_files(root, "mini_imagenet")
    sessions = []
    for path in files:
        parts = np.char.rpartition(read_session_lines(path, "mini_imagenet"), "/")  # (dir, "/", file name)
        names_in, dirs = parts[:, 2], parts[:, 0]
        pos = np.minimum(np.searchsorted(sorted_names, names_in), len(sorted_names) - 1)
        found = sorted_names[pos] == names_in
        if not found.all():
            raise ClbenchError(
                f"{path} names {(~found).sum()} image(s) that {train.csv} does not list, e.g. {names_in[~found][0]}: "
                "use session lists that match this train.csv (a partial image copy needs filtered lists)"
            )
        rows = order[pos].astype(np.int64)
        wnid_dirs = np.char.rpartition(dirs, "/")[:, 2]
        wrong = (wnid_dirs != "") & (wnid_dirs != train.wnids[rows])
        if wrong.any():
            raise ClbenchError(
                f"{path} is corrupt ({names_in[wrong][0]} is filed under {wnid_dirs[wrong][0]}, "
                f"but {train.csv} labels it otherwise)"
            )
        sessions.append(rows)
    _check_unique(sessions, files, "image row")
    return MiniImageNetFscil(train, test, sessions, names)


def load_miniimagenet_fscil(root: Path, cache_dir: Path | None = None) -> Dataset:
    """mini-ImageNet in the FSCIL partition: "train"/"test" over 100 classes, `index_lists["sessions"]`.

    Images come from `<root>/mini-imagenet/images` by file name, through the prepared cache (default
    `<root>/mini-imagenet/prepared`, or `cache_dir`); sessions are int64 row indices into "train".
    """
    lists = miniimagenet_lists(root, cache_dir)
    image_dir = Path(root) / miniimagenet.FOLDER / "images"
    partitions = {
        name: LabeledArrays(
            miniimagenet.load_images(item, image_dir),
            miniimagenet.encode(item.wnids, lists.class_names),
            lists.class_names,
            {"filename": item.filenames},
        )
        for name, item in (("train", lists.train), ("test", lists.test))
    }
    return Dataset(name="mini-imagenet-fscil", partitions=partitions, index_lists={"sessions": lists.sessions})
