"""mini-ImageNet from a tiny image folder + split CSVs, or from the pickle caches; plus the shared real copy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from clbench.datasets import cache, miniimagenet
from clbench.errors import ClbenchError


def no_decoding(monkeypatch):
    monkeypatch.setattr(cache, "decode_image", lambda *a: pytest.fail("an image was decoded"))


def test_csv_layout_partitions_labels_and_class_order(mini_root, fmt):
    data = miniimagenet.load(mini_root)
    classes = fmt.MINI_CLASSES
    expected_names = tuple(classes["train"] + classes["val"] + classes["test"])  # first appearance, not sorted
    assert data.name == "mini-imagenet" and list(data.partitions) == ["train", "val", "test"]
    offset = 0
    for split in ("train", "val", "test"):
        part = data.partition(split)
        rows = fmt.mini_rows(split)
        assert part.images.shape == (len(rows), 3, 84, 84) and part.images.dtype == np.uint8
        assert isinstance(part.images, np.memmap)
        assert part.class_names == expected_names
        np.testing.assert_array_equal(part.metadata["filename"], [f for f, _ in rows])
        n = len(classes[split])
        np.testing.assert_array_equal(part.labels, np.repeat(np.arange(offset, offset + n), fmt.MINI_PER_CLASS))
        assert part.labels.dtype == np.int64
        offset += n
        for i, (name, _) in enumerate(rows):  # decoded pixels are the written colour, RGB in channel order
            assert np.abs(part.images[i, :, 42, 42].astype(int) - fmt.color(name)).max() <= 4


def test_odd_sized_image_is_resized_to_84(mini_root, fmt):
    part = miniimagenet.load(mini_root).partition("train")
    i = list(part.metadata["filename"]).index(fmt.ODD_SIZE_FILE)
    assert np.abs(part.images[i, :, 10, 10].astype(int) - fmt.color(fmt.ODD_SIZE_FILE)).max() <= 4


def test_second_load_memory_maps_the_cache_without_decoding(mini_root, monkeypatch):
    first = miniimagenet.load(mini_root)
    caches = sorted(p.name for p in (mini_root / "mini-imagenet" / "prepared").iterdir())
    assert [c.split("-")[0] for c in caches] == ["test", "train", "val"] and all(c.endswith(".npy") for c in caches)
    no_decoding(monkeypatch)
    second = miniimagenet.load(mini_root)
    for split in first.partitions:
        assert isinstance(second.partition(split).images, np.memmap)
        np.testing.assert_array_equal(first.partition(split).images, second.partition(split).images)


def test_cache_dir_keeps_the_data_folder_untouched(mini_root, tmp_path_factory, monkeypatch):
    cache_dir = tmp_path_factory.mktemp("caches")
    miniimagenet.load(mini_root, cache_dir=cache_dir)
    assert not (mini_root / "mini-imagenet" / "prepared").exists()
    assert len(list(cache_dir.glob("*.npy"))) == 3
    no_decoding(monkeypatch)
    miniimagenet.load(mini_root, cache_dir=cache_dir)


def test_changed_csv_gets_a_new_cache_instead_of_stale_images(mini_root, fmt):
    miniimagenet.load(mini_root)
    rows = fmt.mini_rows("val")[:-1]
    fmt.write_csv(mini_root / "mini-imagenet" / "val.csv", rows)
    part = miniimagenet.load(mini_root).partition("val")
    assert len(part) == len(rows) and len(list((mini_root / "mini-imagenet" / "prepared").glob("val-*.npy"))) == 2


def test_csv_naming_an_absent_image_names_csv_and_file(mini_root):
    (mini_root / "mini-imagenet" / "images" / "n0500000500000002.jpg").unlink()
    with pytest.raises(ClbenchError, match="val.csv names 1 image.*n0500000500000002.jpg") as info:
        miniimagenet.load(mini_root)
    assert "\n" not in str(info.value)


def test_missing_csv_is_named(mini_root):
    (mini_root / "mini-imagenet" / "test.csv").unlink()
    with pytest.raises(ClbenchError, match=r"test\.csv not found"):
        miniimagenet.load(mini_root)


@pytest.mark.parametrize(
    "text", [b"file,label\na.jpg,n1\n", b"filename,label\na.jpg\n", b"", b"filename,label\na.jpg,n1\na.jpg,n1\n",
             b"filename,label\n\xff\xfe.jpg,n1\n", bytes(range(256))]
)
def test_malformed_csv_is_named(mini_root, text):
    path = mini_root / "mini-imagenet" / "train.csv"
    path.write_bytes(text)
    with pytest.raises(ClbenchError, match="train.csv is corrupt") as info:
        miniimagenet.load(mini_root)
    assert "\n" not in str(info.value)


def test_csv_with_only_its_header_lists_no_images(mini_root):
    (mini_root / "mini-imagenet" / "val.csv").write_text("filename,label\n")
    with pytest.raises(ClbenchError, match=r"val\.csv lists no images \(it holds only its header line\)"):
        miniimagenet.load(mini_root)


def test_csv_saved_with_a_byte_order_mark_reads_the_same(mini_root):
    path = mini_root / "mini-imagenet" / "val.csv"
    before = miniimagenet.read_csv(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # as spreadsheet programs save it
    after = miniimagenet.read_csv(path)
    for column_before, column_after in zip(before, after):
        np.testing.assert_array_equal(column_before, column_after)


def test_corrupt_jpeg_is_named_and_leaves_no_cache(mini_root):
    bad = mini_root / "mini-imagenet" / "images" / "n0600000600000001.jpg"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ClbenchError, match=str(bad)):
        miniimagenet.load(mini_root)
    assert not list((mini_root / "mini-imagenet" / "prepared").glob("test-*"))
    assert not list((mini_root / "mini-imagenet" / "prepared").glob(".*"))


def test_corrupt_cache_is_named(mini_root):
    miniimagenet.load(mini_root)
    path = next((mini_root / "mini-imagenet" / "prepared").glob("train-*.npy"))
    np.save(path, np.zeros((2, 3, 84, 84), np.uint8))
    with pytest.raises(ClbenchError, match=f"{path}.*delete it; it is rebuilt on next use"):
        miniimagenet.load(mini_root)


def test_nothing_there_says_what_to_put_where(tmp_path):
    with pytest.raises(ClbenchError, match=r"mini-ImageNet not found: expected .*mini-imagenet/images/\*\.jpg") as info:
        miniimagenet.load(tmp_path)
    assert "mini-imagenet-cache-" in str(info.value) and "\n" not in str(info.value)


def test_pickle_layout(tmp_path, fmt):
    written = fmt.write_mini_pickles(tmp_path)
    data = miniimagenet.load(tmp_path)
    classes = fmt.MINI_CLASSES
    names = tuple(classes["train"] + classes["val"] + classes["test"])  # by first index, not dict order
    offset = 0
    for split in ("train", "val", "test"):
        part = data.partition(split)
        assert part.class_names == names and part.images.flags.c_contiguous
        np.testing.assert_array_equal(part.images, written[split].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(part.labels, np.repeat(np.arange(offset, offset + len(classes[split])), 2))
        offset += len(classes[split])


def dump(path, **entries):
    path.write_bytes(pickle.dumps(entries))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:500]), "corrupt"),
        (lambda p: dump(p, image_data=np.zeros((2, 84, 84), np.uint8), class_dict={}), "84 x 84 x 3"),
        (lambda p: dump(p, images=1), "image_data and class_dict"),
        (lambda p: dump(p, image_data=np.zeros((2, 84, 84, 3), np.uint8), class_dict={"a": [0]}), "exactly one class"),
        (lambda p: dump(p, image_data=np.zeros((2, 84, 84, 3), np.uint8), class_dict=[0, 1]), "and class_dict"),
        (lambda p: dump(p, image_data=np.zeros((0, 84, 84, 3), np.uint8), class_dict={}), "no images"),
        *((lambda p, idx=idx: dump(p, image_data=np.zeros((2, 84, 84, 3), np.uint8), class_dict={"a": idx}),
           "'a' is not a class name with a list of image indices") for idx in (["x", "y"], None, [0.0, 1.0], [2**70])),
    ],
    ids=["truncated", "shape", "keys", "unlabelled", "class-dict-list", "no-images", "text-indices", "none-indices",
         "float-indices", "huge-index"],
)
def test_corrupt_pickle_is_named(tmp_path, fmt, corrupt, match):
    fmt.write_mini_pickles(tmp_path)
    path = tmp_path / "mini-imagenet" / "mini-imagenet-cache-val.pkl"
    corrupt(path)
    with pytest.raises(ClbenchError, match=match) as info:
        miniimagenet.load(tmp_path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def real_mini(shared_data, tmp_path_factory):
    """The shared partial mini-ImageNet, decoded once into a temporary cache (the data folder is read-only)."""
    if miniimagenet.layout(shared_data) != "csv":
        pytest.skip("no mini-imagenet image folder in the shared data")
    return miniimagenet.load(shared_data, cache_dir=tmp_path_factory.mktemp("mini-cache"))


def test_real_partial_miniimagenet(real_mini, shared_data):
    sizes = {s: len(real_mini.partition(s)) for s in real_mini.partitions}
    assert sizes == {"train": 12_884, "val": 3_215, "test": 4_021}
    for split, (lo, hi) in {"train": (0, 64), "val": (64, 80), "test": (80, 100)}.items():
        part = real_mini.partition(split)
        assert set(np.unique(part.labels)) == set(range(lo, hi))
        assert part.images.shape[1:] == (3, 84, 84)
        assert 40 < part.images[:50].mean() < 200  # real photographs, not blank arrays
    assert real_mini.num_classes == 100 and real_mini.partition("train").class_names[0] == "n01532829"
    assert not (shared_data / "mini-imagenet" / "prepared").exists()
