"""What data is on disk and in which state; building the prepared caches on request (`clbench data`).

Each dataset has a check `(root, cache_dir) -> entry` and optionally a preparer `(root, cache_dir) -> None`.
An entry is `{"name", "state", "path", "detail"}` with state in STATES. To add a dataset, add it to
CHECKS / PREPARERS below (or call `register`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from clbench.datasets import cifar100, core50, fscil_splits, miniimagenet
from clbench.datasets.cache import cache_state, corrupt_cache
from clbench.errors import ClbenchError

STATES = ("present", "prepared", "missing", "corrupt")

Entry = dict[str, str]
Check = Callable[[Path, Path | None], Entry]
Prepare = Callable[[Path, Path | None], None]


def _entry(name: str, state: str, path: Path, detail: str) -> Entry:
    return {"name": name, "state": state, "path": str(path), "detail": detail}


def _check_cifar100(root: Path, cache_dir: Path | None) -> Entry:
    folder = root / cifar100.FOLDER
    absent = [n for n in cifar100.MD5 if not (folder / n).exists()]
    if absent:
        how = f"no {', '.join(absent)}: download {cifar100.URL} and extract it into {root}"
        return _entry("cifar100", "missing", folder, how)
    try:
        data = cifar100.load(root, download=False)
    except ClbenchError as e:
        return _entry("cifar100", "corrupt", folder, str(e))
    sizes = f"{len(data.partition('train'))} train / {len(data.partition('test'))} test images"
    verdict = "md5 verified" if cifar100.md5_ok(root) else "md5 differs from the official release"
    return _entry("cifar100", "present", folder, f"{sizes}, {verdict}")


def _images_state(name: str, lists: list[miniimagenet.ImageList], image_dir: Path, path: Path, detail: str) -> Entry:
    """prepared / corrupt (a bad cache or an absent image) / present, for image lists with caches."""
    states = [cache_state(item.cache, item.shape) for item in lists]
    bad = [(item, s) for item, s in zip(lists, states) if s not in ("ok", "absent")]
    if bad:
        item, why = bad[0]
        return _entry(name, "corrupt", path, str(corrupt_cache(item.cache, why)))
    if all(s == "ok" for s in states):
        return _entry(name, "prepared", path, f"{detail}; caches in {lists[0].cache.parent}")
    try:
        miniimagenet.check_images([item for item, s in zip(lists, states) if s == "absent"], image_dir)
    except ClbenchError as e:
        return _entry(name, "corrupt", path, str(e))
    return _entry(name, "present", path, f"{detail}; not prepared yet (JPEGs are decoded on first use)")


def _check_miniimagenet(root: Path, cache_dir: Path | None) -> Entry:
    folder = root / miniimagenet.FOLDER
    kind = miniimagenet.layout(root)
    if kind is None:
        how = f"no images/ + train/val/test.csv and no pickle caches ({miniimagenet.HOW_TO_GET})"
        return _entry("mini-imagenet", "missing", folder, how)
    if kind == "pickle":
        absent = [s for s in miniimagenet.SPLITS if not (folder / f"mini-imagenet-cache-{s}.pkl").exists()]
        if absent:
            return _entry("mini-imagenet", "corrupt", folder, f"no mini-imagenet-cache-{absent[0]}.pkl")
        return _entry("mini-imagenet", "present", folder, "pickle caches (read on load)")
    try:
        lists = miniimagenet.image_lists(root, cache_dir)
    except ClbenchError as e:
        return _entry("mini-imagenet", "corrupt", folder, str(e))
    counts = " / ".join(f"{len(lists[s].filenames)} {s}" for s in miniimagenet.SPLITS)
    official = all(len(lists[s].filenames) == miniimagenet.OFFICIAL_ROWS[s] for s in miniimagenet.SPLITS)
    detail = f"{counts} images ({'official split' if official else 'partial split'})"
    return _images_state("mini-imagenet", list(lists.values()), folder / "images", folder, detail)


def _check_miniimagenet_fscil(root: Path, cache_dir: Path | None) -> Entry:
    folder = root / fscil_splits.FOLDER / "mini_imagenet"
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        return _entry("mini-imagenet-fscil", "missing", folder, str(fscil_splits.missing_lists_error(folder)))
    absent = [f.name for f in fscil_splits.session_files(root, "mini_imagenet") if not f.exists()]
    if absent:
        how = f"no {absent[0]}: get it from {fscil_splits.CEC} (data/index_list/mini_imagenet)"
        return _entry("mini-imagenet-fscil", "missing", folder, how)
    try:
        lists = fscil_splits.miniimagenet_lists(root, cache_dir)
    except ClbenchError as e:
        return _entry("mini-imagenet-fscil", "corrupt", folder, str(e))
    detail = f"{len(lists.train.filenames)} train / {len(lists.test.filenames)} test images"
    detail += f", {len(lists.class_names)} classes"
    image_dir = root / miniimagenet.FOLDER / "images"
    if not image_dir.is_dir() and not all(item.cache.exists() for item in (lists.train, lists.test)):
        how = f"the lists are here but the images are not: expected {image_dir}/*.jpg"
        return _entry("mini-imagenet-fscil", "missing", folder, how)
    return _images_state("mini-imagenet-fscil", [lists.train, lists.test], image_dir, folder, detail)


def _check_fscil_splits(root: Path, cache_dir: Path | None) -> Entry:
    folder = root / fscil_splits.FOLDER
    found, notes = 0, []
    for benchmark in ("cifar100", "mini_imagenet"):
        files = fscil_splits.session_files(root, benchmark)
        if not any(f.exists() for f in files):
            notes.append(f"{benchmark}: missing")
            continue
        try:
            if benchmark == "cifar100":
                sizes = [len(s) for s in fscil_splits.load_cifar100_sessions(root)]
            else:
                sizes = [len(fscil_splits.read_session_lines(f, benchmark)) for f in files]
        except ClbenchError as e:
            return _entry("fscil-splits", "corrupt", folder, str(e))
        found += 1
        full = "official, md5 verified" if sizes[0] == fscil_splits.FULL_SESSION_1_ROWS else "partial"
        notes.append(f"{benchmark}: {fscil_splits.SESSIONS} sessions, session_1 {sizes[0]} rows ({full})")
    state = "present" if found else "missing"
    if not found:
        notes.append(f"get them from {fscil_splits.CEC} (data/index_list)")
    return _entry("fscil-splits", state, folder, "; ".join(notes))


def _prepare_cifar100(root: Path, cache_dir: Path | None) -> None:
    cifar100.load(root, download=True)  # nothing to cache: the pickles are arrays already


def _prepare_miniimagenet(root: Path, cache_dir: Path | None) -> None:
    miniimagenet.load(root, cache_dir)


def _prepare_miniimagenet_fscil(root: Path, cache_dir: Path | None) -> None:
    fscil_splits.load_miniimagenet_fscil(root, cache_dir)


CHECKS: dict[str, Check] = {
    "cifar100": _check_cifar100,
    "mini-imagenet": _check_miniimagenet,
    "mini-imagenet-fscil": _check_miniimagenet_fscil,
    "fscil-splits": _check_fscil_splits,
    "core50": core50.check,
}
PREPARERS: dict[str, Prepare] = {
    "cifar100": _prepare_cifar100,
    "mini-imagenet": _prepare_miniimagenet,
    "mini-imagenet-fscil": _prepare_miniimagenet_fscil,
    "core50": core50.prepare,
}


def register(name: str, check: Check, prepare: Prepare | None = None) -> None:
    """Add (or replace) a dataset's status check and, optionally, its preparer."""
    CHECKS[name] = check
    if prepare is not None:
        PREPARERS[name] = prepare


def _names(names: Sequence[str] | None) -> list[str]:
    names = list(CHECKS) if names is None else list(names)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ClbenchError(f"unknown dataset '{unknown[0]}' (known: {', '.join(CHECKS)})")
    return names


def report(root: Path, names: Sequence[str] | None = None, cache_dir: Path | None = None) -> list[Entry]:
    """One entry per dataset: name, state (present / prepared / missing / corrupt), path, one-line detail."""
    return [CHECKS[name](Path(root), cache_dir) for name in _names(names)]


def prepare(root: Path, names: Sequence[str] | None = None, cache_dir: Path | None = None) -> list[Entry]:
    """Build the prepared caches of `names` (default: all); returns their entries afterwards.

    A dataset that cannot be prepared does not stop the others: its entry carries the reason.
    """
    entries = []
    for name in _names(names):
        error = None
        if name in PREPARERS:
            try:
                PREPARERS[name](Path(root), cache_dir)
            except ClbenchError as e:
                error = str(e)
        entry = CHECKS[name](Path(root), cache_dir)
        if error and entry["state"] not in ("missing", "corrupt"):
            entry["state"] = "corrupt"
        if error:
            entry["detail"] = error
        entries.append(entry)
    return entries


def failed(entries: Sequence[Entry], required: bool = False) -> list[Entry]:
    """The entries that make `clbench data` exit non-zero: corrupt ones, and with `required` (datasets
    named on `--prepare`, which the user asked to have) missing ones too."""
    bad = ("missing", "corrupt") if required else ("corrupt",)
    return [e for e in entries if e["state"] in bad]
