"""CoRe50 from tiny files in the exact official layout: PNG folders or core50_imgs.npz, paths/LUP/labels.pkl."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clbench.datasets import core50
from clbench.errors import ClbenchError
from clbench.protocols.core50 import core50_nc, core50_ni

OBJECTS = (0, 1, 5, 6, 10, 11, 20, 25, 30, 45)  # object ids (o1, o2, o6, ...): 10 objects in 7 categories
FRAMES = 2
TRAIN, TEST = core50.TRAIN_SESSIONS, core50.TEST_SESSIONS
N = 11 * len(OBJECTS) * FRAMES


def pixel(session: int, obj: int, frame: int) -> tuple[int, int, int]:
    """Each image is one solid colour that names it, so decoded pixels can be checked exactly."""
    return (session * 20, obj * 5, 100 + frame)


def listing() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """paths.pkl entries (sessions in the s1, s10, s11, s2 ... order of a sorted listing), and their parts."""
    rows = [(s, o, f) for s in sorted(range(1, 12), key=str) for o in OBJECTS for f in range(FRAMES)]
    paths = [f"s{s}/o{o + 1}/C_{s:02d}_{o + 1:02d}_{f:03d}.png" for s, o, f in rows]
    session, obj, frame = (np.array(col) for col in zip(*rows))
    return paths, session, obj, frame


def official_runs(session: np.ndarray, obj: np.ndarray, n_runs: int = 2) -> tuple[dict, dict]:
    """LUP and labels in the official nesting: scenario -> runs -> [batch lists..., test list] of ints.

    NI: one session per batch; NC: 2 objects then one new object per batch (labels renumbered per run,
    as in the real NC); NIC: one (session, object) pair per batch, two in the first (79 batches).
    """
    train, test = np.flatnonzero(np.isin(session, TRAIN)), np.flatnonzero(np.isin(session, TEST))
    lup, labels = {"ni": [], "nc": [], "nic": []}, {"ni": [], "nc": [], "nic": []}
    for r in range(n_runs):
        rng = np.random.RandomState(r)
        objects = rng.permutation(OBJECTS)
        pairs = [(s, o) for s in TRAIN for o in OBJECTS]
        pairs = [pairs[k] for k in rng.permutation(len(pairs))]
        groups = {
            "ni": [train[session[train] == s] for s in rng.permutation(TRAIN)],
            "nc": [train[np.isin(obj[train], g)] for g in [objects[:2], *([o] for o in objects[2:])]],
            "nic": [train[np.isin(session[train] * 100 + obj[train], [s * 100 + o for s, o in g])]
                    for g in [pairs[:2], *([p] for p in pairs[2:])]],
        }
        rank = {int(o): k for k, o in enumerate(objects)}
        for scenario, batches in groups.items():
            batches = [rng.permutation(b) for b in batches] + [rng.permutation(test)]
            lup[scenario].append([b.tolist() for b in batches])
            lab = [[rank[int(o)] for o in obj[b]] if scenario == "nc" else obj[b].tolist() for b in batches]
            labels[scenario].append(lab)
    return lup, labels


def dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_core50(root: Path, pngs: bool = True, npz: str | None = None, lup: bool = True) -> Path:
    folder = root / "core50"
    folder.mkdir(parents=True, exist_ok=True)
    paths, session, obj, frame = listing()
    dump(folder / "paths.pkl", paths)
    if lup:
        runs, labels = official_runs(session, obj)
        dump(folder / "LUP.pkl", runs)
        dump(folder / "labels.pkl", labels)
    if pngs:
        for p, s, o, f in zip(paths, session, obj, frame):
            (folder / core50.IMAGE_DIR / p).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (128, 128), pixel(s, o, f)).save(folder / core50.IMAGE_DIR / p)
    if npz:
        colours = np.array([pixel(s, o, f) for s, o, f in zip(session, obj, frame)], dtype=np.uint8)
        x = np.broadcast_to(colours[:, None, None, :], (N, 128, 128, 3))
        (np.savez_compressed if npz == "compressed" else np.savez)(folder / core50.NPZ, x=x)
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("core50-template")
    write_core50(root)
    return root


@pytest.fixture
def root(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template / "core50", tmp_path / "core50")
    return tmp_path


def one_line_error(match: str, fn, *args) -> str:
    with pytest.raises(ClbenchError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_loads_partitions_labels_and_metadata(root: Path):
    data = core50.load(root)
    paths, session, obj, frame = listing()
    train, test = data.partition("train"), data.partition("test")
    assert data.name == "core50" and data.num_classes == 50 and train.class_names == core50.CLASS_NAMES
    assert len(train) == 8 * len(OBJECTS) * FRAMES and len(test) == 3 * len(OBJECTS) * FRAMES
    for part, sessions in ((train, TRAIN), (test, TEST)):
        assert part.images.shape[1:] == (3, 128, 128) and part.images.dtype == np.uint8
        assert isinstance(part.images, np.memmap)
        meta = part.metadata
        assert set(meta) == {"session", "object", "category", "path_index"}
        assert all(col.dtype == np.int64 for col in meta.values()) and part.labels.dtype == np.int64
        assert np.all(np.diff(meta["path_index"]) > 0)  # paths.pkl order
        idx = meta["path_index"]
        assert set(meta["session"]) == set(sessions)
        np.testing.assert_array_equal(meta["session"], session[idx])
        np.testing.assert_array_equal(part.labels, obj[idx])
        np.testing.assert_array_equal(meta["object"], obj[idx])
        np.testing.assert_array_equal(meta["category"], obj[idx] // 5)
        expected = np.array([pixel(s, o, f) for s, o, f in zip(session[idx], obj[idx], frame[idx])])
        np.testing.assert_array_equal(part.images[:, :, 64, 64], expected)
        np.testing.assert_array_equal(part.images[:, :, 0, 127], expected)


def test_official_lists_are_carried_as_int64_arrays(root: Path):
    data = core50.load(root)
    _, session, obj, _ = listing()
    runs, labels = official_runs(session, obj)
    lup = data.index_lists["lup"]
    assert set(lup) == {"ni", "nc", "nic"}
    assert [len(lup[s][0]) for s in ("ni", "nc", "nic")] == [9, 10, 80]  # batches + the test list
    for scenario in lup:
        for run, written in zip(lup[scenario], runs[scenario]):
            assert all(b.dtype == np.int64 for b in run)
            assert [b.tolist() for b in run] == written
    # labels.pkl: only NC's labels differ from object ids, so only NC is carried
    assert set(data.index_lists["labels"]) == {"nc"}
    assert [b.tolist() for b in data.index_lists["labels"]["nc"][1]] == labels["nc"][1]


def test_lup_pickled_as_numpy_arrays_reads_the_same(root: Path):
    before = core50.load(root).index_lists
    runs = core50.read_pickle(root / "core50" / "LUP.pkl")
    as_arrays = {k: [[np.array(b, dtype=np.int32) for b in run] for run in v] for k, v in runs.items()}
    dump(root / "core50" / "LUP.pkl", as_arrays)
    after = core50.load(root).index_lists
    for scenario, runs in before["lup"].items():
        for run, other in zip(runs, after["lup"][scenario]):
            assert all(np.array_equal(a, b) and b.dtype == np.int64 for a, b in zip(run, other))


def test_cache_is_built_once_and_reused(root: Path):
    first = core50.load(root)
    caches = sorted((root / "core50" / "prepared").glob("*.npy"))
    assert [p.name.split("-")[0] for p in caches] == ["test", "train"]
    assert not list((root / "core50" / "prepared").glob(".*"))  # no temporary file left behind
    shutil.rmtree(root / "core50" / core50.IMAGE_DIR)  # the PNGs are not needed any more
    again = core50.load(root)
    np.testing.assert_array_equal(again.partition("train").images, first.partition("train").images)
    assert again.partition("test").images.filename == first.partition("test").images.filename


def test_cache_dir_option(root: Path, tmp_path: Path):
    data = core50.load(root, cache_dir=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere").glob("*.npy"))) == 2
    assert not (root / "core50" / "prepared").exists()
    assert len(data.partition("test")) == 60


@pytest.mark.parametrize("kind", ["compressed", "stored"])
def test_npz_gives_the_same_arrays(root: Path, tmp_path: Path, kind: str):
    from_pngs = core50.load(root)
    other = tmp_path / "npz"
    write_core50(other, pngs=False, npz=kind)
    from_npz = core50.load(other)
    for name in ("train", "test"):
        np.testing.assert_array_equal(from_npz.partition(name).images, from_pngs.partition(name).images)
        np.testing.assert_array_equal(from_npz.partition(name).labels, from_pngs.partition(name).labels)


def test_without_lup_there_are_no_official_lists(tmp_path: Path, template: Path):
    shutil.copytree(template / "core50", tmp_path / "core50", ignore=shutil.ignore_patterns("*.pkl"))
    write_core50(tmp_path, pngs=False, lup=False)
    data = core50.load(tmp_path)
    assert data.index_lists == {}
    assert len(core50_ni(data).experiences) == 8


def test_class_names_file_in_the_data_folder_is_used(root: Path):
    names = [f"thing{k}" for k in range(50)]
    (root / "core50" / "core50_class_names.txt").write_text("\n".join(names) + "\n")
    assert core50.load(root).partition("train").class_names == tuple(names)
    (root / "core50" / "core50_class_names.txt").write_text("a\nb\n")
    one_line_error(r"core50_class_names\.txt is corrupt \(2 names", core50.load, root)


def test_streams_from_loaded_files_follow_the_lup(root: Path):
    data = core50.load(root)
    stream = core50_nc(data, run=1)
    pi = data.partition("train").metadata["path_index"]
    for exp, batch in zip(stream.experiences, data.index_lists["lup"]["nc"][1]):
        np.testing.assert_array_equal(pi[exp.train_indices], batch)
    assert [len(e.classes) for e in stream.experiences] == [2] + [1] * 8


# --- bad input: one line, naming the file ----------------------------------------------------------

def test_missing_folder(tmp_path: Path):
    msg = one_line_error("CoRe50 not found", core50.load, tmp_path)
    assert str(tmp_path / "core50") in msg and core50.URL in msg


def test_missing_paths_pkl(root: Path):
    (root / "core50" / "paths.pkl").unlink()
    one_line_error(r"paths\.pkl not found: download it from https://vlomonaco", core50.load, root)


@pytest.mark.parametrize("name", ["paths.pkl", "LUP.pkl", "labels.pkl"])
def test_truncated_pickles(root: Path, name: str):
    path = root / "core50" / name
    path.write_bytes(path.read_bytes()[:-40])
    one_line_error(rf"{name} is corrupt \(.*download it again", core50.load, root)


@pytest.mark.parametrize("name, content, match", [
    ("paths.pkl", {"not": "a list"}, "expected a non-empty list"),
    ("paths.pkl", ["s1/o1/C_01_01_000.png", "s1/o1/C_01_01_000.png"], "more than once"),
    ("paths.pkl", ["s1/o1/picture.png"], "is not like 's1/o1/C_01_01_000.png'"),
    ("paths.pkl", ["s1/o2/C_01_01_000.png"], "names no CoRe50 image"),
    ("LUP.pkl", [1, 2, 3], "expected a dict of scenarios"),
    ("LUP.pkl", {"ni": [[[0, 1]]]}, "'ni' run 0 is not batch lists"),
    ("LUP.pkl", {"ni": [[[0, "x"], [1]]]}, "not a list of integers"),
    ("LUP.pkl", {"ni": [[[0, [1]], [1]]]}, "not a list of integers"),  # ragged
    ("LUP.pkl", {"ni": [[[2**64 - 1], [1]]]}, "not a list of integers"),  # beyond int64
    ("LUP.pkl", {"ni": [[[0, N], [1]]]}, "does not match paths.pkl"),
])
def test_malformed_pickles(root: Path, name: str, content: object, match: str):
    dump(root / "core50" / name, content)
    msg = one_line_error(match, core50.load, root)
    assert name in msg


def test_labels_that_do_not_match_the_lup(root: Path):
    labels = core50.read_pickle(root / "core50" / "labels.pkl")
    labels["nc"][0][3] = labels["nc"][0][3][:-1]
    dump(root / "core50" / "labels.pkl", labels)
    one_line_error(r"labels\.pkl does not match .*LUP\.pkl", core50.load, root)


def test_paths_pkl_naming_a_missing_png(root: Path):
    missing = root / "core50" / core50.IMAGE_DIR / "s4/o26/C_04_26_001.png"
    missing.unlink()
    msg = one_line_error(r"paths\.pkl names 1 image\(s\) absent from", core50.load, root)
    assert "s4/o26/C_04_26_001.png" in msg
    assert not list((root / "core50").rglob("*.npy")) and not list((root / "core50").rglob("*.tmp"))


def test_undecodable_png(root: Path):
    (root / "core50" / core50.IMAGE_DIR / "s3/o1/C_03_01_000.png").write_bytes(b"not a png")
    one_line_error(r"C_03_01_000\.png cannot be decoded", core50.load, root)
    assert not list((root / "core50" / "prepared").glob("test-*"))


def test_no_images_at_all(root: Path):
    shutil.rmtree(root / "core50" / core50.IMAGE_DIR)
    one_line_error(r"core50_128x128/ \(core50_128x128\.zip\) or .*core50_imgs\.npz", core50.load, root)


def test_npz_with_the_wrong_shape(root: Path):
    shutil.rmtree(root / "core50" / core50.IMAGE_DIR)
    np.savez(root / "core50" / core50.NPZ, x=np.zeros((N - 1, 128, 128, 3), dtype=np.uint8))
    one_line_error(rf"core50_imgs\.npz holds uint8 \({N - 1}, 128, 128, 3\), expected uint8 \({N}, 128",
                   core50.load, root)
    np.savez(root / "core50" / core50.NPZ, images=np.zeros((N, 128, 128, 3), dtype=np.uint8))
    one_line_error(r"core50_imgs\.npz has no array 'x'", core50.load, root)
    (root / "core50" / core50.NPZ).write_bytes(b"PK garbage")
    one_line_error(r"core50_imgs\.npz is corrupt", core50.load, root)
    assert not (root / "core50" / "prepared").exists() or not list((root / "core50" / "prepared").iterdir())


def test_status_entry(root: Path, tmp_path: Path):
    assert core50.check(tmp_path / "nowhere")["state"] == "missing"
    assert core50.check(root)["state"] == "present"
    core50.prepare(root)
    entry = core50.check(root)
    assert entry["state"] == "prepared" and "160 train / 60 test images, with LUP.pkl" in entry["detail"]
    cache = next((root / "core50" / "prepared").glob("train-*.npy"))
    cache.write_bytes(cache.read_bytes()[:1000])
    assert core50.check(root)["state"] == "corrupt"
    one_line_error(r"prepared cache .*train-.*\.npy is corrupt", core50.load, root)


# --- the real metadata shipped on this machine (skipped when absent) ----------------------------------

def test_embedded_class_names_match_the_official_file(shared_data: Path):
    path = shared_data / "core50" / "core50_class_names.txt"
    if not path.exists():
        pytest.skip(f"no {path}")
    assert tuple(path.read_text().split()) == core50.CLASS_NAMES
    assert core50.CATEGORY_NAMES[:2] == ("plug_adapter", "mobile_phone") and len(core50.CATEGORY_NAMES) == 10


def test_real_file_names_parse_to_their_labels(shared_data: Path):
    path = shared_data / "core50" / "test_filelist_reduced.txt"
    if not path.exists():
        pytest.skip(f"no {path}")
    table = np.array(path.read_text().split()).reshape(-1, 2)
    session, obj = core50.parse_paths(table[:, 0].tolist(), str(path))
    np.testing.assert_array_equal(obj, table[:, 1].astype(np.int64))
    assert set(session.tolist()) == set(TEST) and set(obj.tolist()) == set(range(50))
