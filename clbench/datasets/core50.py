"""CoRe50 (Lomonaco & Maltoni 2017) from `<root>/core50/`, the official release as Avalanche reads it.

- `paths.pkl`: list of N image paths relative to `core50_128x128/`, `s{S}/o{O}/C_{SS}_{OO}_{FFF}.png`,
  in the order every official index refers to (N = 164,866 in the full release).
- images: the PNG folders `core50_128x128/s{S}/o{O}/...`, or `core50_imgs.npz` (array `x`,
  N x 128 x 128 x 3 uint8 in paths.pkl order); the npz is preferred when both are there.
- `LUP.pkl` (optional): dict scenario ("ni", "nc", "nic", ...) -> runs -> batches -> paths.pkl indices;
  each run holds its training batches then, last, its test list. `labels.pkl` has the same nesting,
  one label per LUP entry (object ids 0..49, except NC, whose labels are renumbered per run).

Partitions "train" (sessions 1, 2, 4, 5, 6, 8, 9, 11) and "test" (sessions 3, 7, 10), each in paths.pkl
order; labels are object ids 0..49. Images are decoded once into `prepared/<partition>-<hash>.npy`.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from clbench.datasets import safe_pickle
from clbench.datasets.arrays import Dataset, LabeledArrays, int_vector
from clbench.datasets.cache import cache_key, cache_state, cached_array, cached_images, corrupt_cache
from clbench.errors import ClbenchError

FOLDER = "core50"
IMAGE_DIR = "core50_128x128"
NPZ = "core50_imgs.npz"
SIZE = 128
TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
TEST_SESSIONS = (3, 7, 10)
OBJECTS_PER_CATEGORY = 5
URL = "https://vlomonaco.github.io/core50/"
CLASS_NAMES = tuple(
    f"{category}{k}"
    for category in ("plug_adapter", "mobile_phone", "scissor", "light_bulb", "can",
                     "glass", "ball", "marker", "cup", "remote_control")
    for k in range(1, OBJECTS_PER_CATEGORY + 1)
)
CATEGORY_NAMES = tuple(dict.fromkeys(name.rstrip("0123456789") for name in CLASS_NAMES))
PATH_PATTERN = re.compile(r"^s(\d+)/o(\d+)/C_(\d+)_(\d+)_\d+\.png$", re.MULTILINE)
NPZ_ROWS = 1024  # rows per read when streaming the npz into a cache


# --- pickles -------------------------------------------------------------------------------------

def read_pickle(path: Path) -> object:
    """The object in one of the release's pickles (Python 2 or 3), or a one-line error naming the file."""
    try:
        return safe_pickle.load(path, "CoRe50 file", f"download it again from {URL}")
    except FileNotFoundError:
        raise ClbenchError(f"CoRe50 file {path} not found: download it from {URL}") from None


def _text(item: object) -> str | None:
    return item.decode("latin1") if isinstance(item, bytes) else item if isinstance(item, str) else None


def parse_paths(paths: list[str], source: str = "paths.pkl") -> tuple[np.ndarray, np.ndarray]:
    """Session (1..11) and object id (0..49) of each `s{S}/o{O}/C_{SS}_{OO}_{FFF}.png` path."""
    text = "\n".join(paths).replace("\\", "/")
    found = PATH_PATTERN.findall(text)
    if len(found) != len(paths) or text.count("\n") != len(paths) - 1:
        bad = next(p for p in paths if not PATH_PATTERN.fullmatch(p.replace("\\", "/")))
        raise ClbenchError(f"CoRe50 file {source} is corrupt: {bad!r} is not like 's1/o1/C_01_01_000.png'")
    table = np.array(found, dtype=np.int64).reshape(-1, 4)
    session, obj = table[:, 0], table[:, 1]
    bad = (session != table[:, 2]) | (obj != table[:, 3]) | (session < 1) | (session > 11) | (obj < 1) | (obj > 50)
    if bad.any():
        raise ClbenchError(f"CoRe50 file {source} is corrupt: {paths[int(np.argmax(bad))]!r} names no CoRe50 image")
    return session, obj - 1


def read_paths(path: Path) -> list[str]:
    """paths.pkl: a list of relative image paths (forward slashes)."""
    obj = read_pickle(path)
    paths = [_text(p) for p in obj] if isinstance(obj, (list, tuple)) and len(obj) else None
    if paths is None or any(p is None for p in paths):
        raise ClbenchError(f"CoRe50 file {path} is corrupt (expected a non-empty list of image paths)")
    paths = [p.replace("\\", "/") for p in paths]
    if len(set(paths)) != len(paths):
        raise ClbenchError(f"CoRe50 file {path} is corrupt (it names an image more than once)")
    return paths


def _int_array(values: object, what: str, path: Path) -> np.ndarray:
    arr = int_vector(values)
    if arr is None:
        raise ClbenchError(f"CoRe50 file {path} is corrupt ({what} is not a list of integers)")
    return arr


def read_runs(path: Path) -> dict[str, list[list[np.ndarray]]]:
    """LUP.pkl or labels.pkl: scenario -> runs -> [batch 0, ..., batch B-1, test] int64 arrays."""
    obj = read_pickle(path)
    if not isinstance(obj, dict) or not obj:
        raise ClbenchError(f"CoRe50 file {path} is corrupt (expected a dict of scenarios: ni, nc, nic, ...)")
    runs: dict[str, list[list[np.ndarray]]] = {}
    for key, value in obj.items():
        scenario = _text(key)
        if scenario is None or not isinstance(value, (list, tuple)) or not value:
            raise ClbenchError(f"CoRe50 file {path} is corrupt (scenario {key!r} is not a list of runs)")
        runs[scenario] = []
        for r, batches in enumerate(value):
            if not isinstance(batches, (list, tuple)) or len(batches) < 2:
                raise ClbenchError(f"CoRe50 file {path} is corrupt ('{scenario}' run {r} is not batch lists "
                                   "+ a test list)")
            runs[scenario].append([_int_array(b, f"'{scenario}' run {r} batch {i}", path)
                                   for i, b in enumerate(batches)])
    return runs


def official_lists(folder: Path, objects: np.ndarray) -> dict[str, object]:
    """`index_lists` from LUP.pkl (and labels.pkl where its labels differ from object ids); {} without LUP.pkl."""
    lup_file, labels_file = folder / "LUP.pkl", folder / "labels.pkl"
    if not lup_file.exists():
        return {}
    lup = read_runs(lup_file)
    for scenario, runs in lup.items():
        for r, batches in enumerate(runs):
            flat = np.concatenate(batches)
            if len(flat) and (flat.min() < 0 or flat.max() >= len(objects)):
                raise ClbenchError(f"CoRe50 file {lup_file} does not match paths.pkl ('{scenario}' run {r} "
                                   f"has indices outside 0..{len(objects) - 1}): use files of the same release")
    lists: dict[str, object] = {"lup": lup}
    if labels_file.exists():
        official = read_runs(labels_file)
        differ = {}
        for scenario, runs in official.items():
            if scenario not in lup:
                continue
            shapes = [[len(b) for b in run] for run in runs]
            if shapes != [[len(b) for b in run] for run in lup[scenario]]:
                raise ClbenchError(f"CoRe50 file {labels_file} does not match {lup_file} ('{scenario}' runs or "
                                   "batches differ in length): use files of the same release")
            pairs = ((lab, idx) for run, lup_run in zip(runs, lup[scenario]) for lab, idx in zip(run, lup_run))
            if any(not np.array_equal(lab, objects[idx]) for lab, idx in pairs):
                differ[scenario] = runs
        if differ:
            lists["labels"] = differ
    return lists


# --- images --------------------------------------------------------------------------------------

def read_class_names(folder: Path) -> tuple[str, ...]:
    """The 50 object names: `core50_class_names.txt` in the data folder if present, else the official ones."""
    path = folder / "core50_class_names.txt"
    if not path.exists():
        return CLASS_NAMES
    try:
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise ClbenchError(f"CoRe50 file {path} cannot be read ({e})") from None
    if len(names) != len(CLASS_NAMES):
        raise ClbenchError(f"CoRe50 file {path} is corrupt ({len(names)} names, expected 50): delete it or fix it")
    return names


def check_pngs(folder: Path, rel: np.ndarray, session: np.ndarray, obj: np.ndarray) -> None:
    """One error naming paths.pkl and a missing PNG when any listed image is absent."""
    image_dir = folder / IMAGE_DIR
    present = []
    for s, o in np.unique(np.stack([session, obj + 1], axis=1), axis=0):
        sub = f"s{s}/o{o}"
        try:
            present.extend(f"{sub}/{name}" for name in os.listdir(image_dir / sub))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ClbenchError(f"CoRe50 image folder {image_dir / sub} cannot be read ({e})") from None
    missing = rel[~np.isin(rel, np.array(present, dtype=str))]
    if len(missing):
        raise ClbenchError(f"{folder / 'paths.pkl'} names {len(missing)} image(s) absent from {image_dir}, e.g. "
                           f"{missing[0]}: extract core50_128x128.zip from {URL} there")


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def npz_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the array `x` in core50_imgs.npz, read without loading it."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("x.npy") as f:
            return _npy_header(f)
    except KeyError:
        raise ClbenchError(f"CoRe50 file {path} has no array 'x': download it again from {URL}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ClbenchError(f"CoRe50 file {path} is corrupt ({e}): download it again from {URL}") from None


def check_npz(path: Path, n_paths: int) -> None:
    """A one-line error unless the npz holds uint8 `n_paths` x 128 x 128 x 3."""
    shape, fortran, dtype = npz_header(path)
    expected = (n_paths, SIZE, SIZE, 3)
    if tuple(shape) != expected or dtype != np.uint8 or fortran:
        raise ClbenchError(f"CoRe50 file {path} holds {dtype} {tuple(shape)}, expected uint8 {expected} (one image "
                           f"per paths.pkl entry): use the npz and paths.pkl of the same release from {URL}")


def fill_from_npz(path: Path, rows: np.ndarray, out: np.ndarray) -> None:
    """Stream `x` of the npz and write its rows `rows[i]` into `out[i]` as C x H x W (bounded memory)."""
    target = np.full(int(rows.max()) + 1, -1, dtype=np.int64)
    target[rows] = np.arange(len(rows))
    row_bytes = SIZE * SIZE * 3
    with zipfile.ZipFile(path) as zf, zf.open("x.npy") as f:
        _npy_header(f)
        for start in range(0, len(target), NPZ_ROWS):
            sel = target[start : start + NPZ_ROWS]
            buf = f.read(len(sel) * row_bytes)
            if len(buf) != len(sel) * row_bytes:
                raise ClbenchError(f"CoRe50 file {path} is truncated: download it again from {URL}")
            block = np.frombuffer(buf, dtype=np.uint8).reshape(len(sel), SIZE, SIZE, 3)
            keep = sel >= 0
            out[sel[keep]] = block[keep].transpose(0, 3, 1, 2)


def partition_images(folder: Path, cache: Path, rel: np.ndarray, rows: np.ndarray, n_paths: int,
                     session: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """N x 3 x 128 x 128 uint8 images of paths.pkl rows `rows`: the cache, built from npz or PNGs if absent."""
    if not cache.exists():
        if (folder / NPZ).exists():
            check_npz(folder / NPZ, n_paths)
            return cached_array(cache, (len(rows), 3, SIZE, SIZE), lambda out: fill_from_npz(folder / NPZ, rows, out))
        if not (folder / IMAGE_DIR).is_dir():
            raise ClbenchError(f"CoRe50 images not found: expected {folder / IMAGE_DIR}/ (core50_128x128.zip) "
                               f"or {folder / NPZ}, from {URL}")
        check_pngs(folder, rel[rows], session[rows], obj[rows])
    files = np.char.add(f"{folder / IMAGE_DIR}{os.sep}", rel[rows])
    return cached_images(files, cache, SIZE, desc=f"preparing {cache.name}")


# --- the dataset ---------------------------------------------------------------------------------

def cache_path(folder: Path, cache_dir: Path | None, partition: str, rel: list[str]) -> Path:
    """The prepared cache of one partition, named after a hash of its image list."""
    return (Path(cache_dir) if cache_dir else folder / "prepared") / f"{partition}-{cache_key(rel, SIZE)}.npy"


def partition_rows(session: np.ndarray) -> dict[str, np.ndarray]:
    """Partition -> its rows of paths.pkl (in paths.pkl order)."""
    return {"train": np.flatnonzero(np.isin(session, TRAIN_SESSIONS)),
            "test": np.flatnonzero(np.isin(session, TEST_SESSIONS))}


def load(root: Path, cache_dir: Path | None = None) -> Dataset:
    """CoRe50 at object level: "train" (sessions 1, 2, 4, 5, 6, 8, 9, 11) and "test" (3, 7, 10).

    Images 3 x 128 x 128 uint8 (memory-mapped cache, default `<root>/core50/prepared`), labels object
    ids 0..49, metadata `session`, `object`, `category` (object // 5), `path_index` (row in paths.pkl).
    `index_lists["lup"]` holds LUP.pkl as int64 arrays and `index_lists["labels"]` the labels.pkl
    scenarios whose labels are not object ids (NC); both are absent without LUP.pkl.
    """
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        raise ClbenchError(f"CoRe50 not found: expected {folder}/ with paths.pkl and core50_128x128/ or "
                           f"core50_imgs.npz (download them from {URL})")
    paths = read_paths(folder / "paths.pkl")
    session, obj = parse_paths(paths, str(folder / "paths.pkl"))
    rel = np.array(paths, dtype=str)
    names = read_class_names(folder)
    index_lists = official_lists(folder, obj)
    partitions = {}
    for name, rows in partition_rows(session).items():
        if not len(rows):
            raise ClbenchError(f"CoRe50 file {folder / 'paths.pkl'} names no image of the {name} sessions")
        cache = cache_path(folder, cache_dir, name, rel[rows].tolist())
        images = partition_images(folder, cache, rel, rows, len(paths), session, obj)
        meta = {"session": session[rows], "object": obj[rows], "category": obj[rows] // OBJECTS_PER_CATEGORY,
                "path_index": rows.astype(np.int64)}
        partitions[name] = LabeledArrays(images, obj[rows].copy(), names, meta)
    return Dataset(name="core50", partitions=partitions, index_lists=index_lists)


def check(root: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """A `clbench data` status entry: name, state (present / prepared / missing / corrupt), path, detail."""
    folder = Path(root) / FOLDER
    entry = {"name": "core50", "path": str(folder)}
    if not (folder / "paths.pkl").exists():
        return {**entry, "state": "missing", "detail": f"no paths.pkl: download the release from {URL}"}
    try:
        paths = read_paths(folder / "paths.pkl")
        session, _ = parse_paths(paths, str(folder / "paths.pkl"))
    except ClbenchError as e:
        return {**entry, "state": "corrupt", "detail": str(e)}
    rel = np.array(paths, dtype=str)
    caches = {name: (cache_path(folder, cache_dir, name, rel[rows].tolist()), len(rows))
              for name, rows in partition_rows(session).items()}
    states = {name: cache_state(path, (n, 3, SIZE, SIZE)) for name, (path, n) in caches.items()}
    bad = {name: s for name, s in states.items() if s not in ("ok", "absent")}
    runs = "with LUP.pkl" if (folder / "LUP.pkl").exists() else "no LUP.pkl (NC/NIC unavailable)"
    sizes = f"{caches['train'][1]} train / {caches['test'][1]} test images, {runs}"
    if bad:
        name, why = next(iter(bad.items()))
        return {**entry, "state": "corrupt", "detail": str(corrupt_cache(caches[name][0], why))}
    if all(s == "ok" for s in states.values()):
        return {**entry, "state": "prepared", "detail": sizes}
    if not (folder / IMAGE_DIR).is_dir() and not (folder / NPZ).exists():
        return {**entry, "state": "missing", "detail": f"no {IMAGE_DIR}/ and no {NPZ}: download from {URL}"}
    return {**entry, "state": "present", "detail": f"{sizes}; not prepared yet (decoded on first use)"}


def prepare(root: Path, cache_dir: Path | None = None) -> None:
    """Build the prepared caches (what `clbench data --prepare` runs)."""
    load(root, cache_dir)
