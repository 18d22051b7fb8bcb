"""FSCIL session lists (CIFAR-100 indices, mini-ImageNet paths), the FSCIL mini-ImageNet dataset, and status."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clbench.datasets import cache, fscil_splits, status
from clbench.errors import ClbenchError

# ---------------------------------------------------------------- CIFAR-100 sessions


def test_cifar100_sessions(fscil_root):
    sessions = fscil_splits.load_cifar100_sessions(fscil_root)
    assert len(sessions) == 9 and all(s.dtype == np.int64 for s in sessions)
    np.testing.assert_array_equal(sessions[0], np.arange(120))
    np.testing.assert_array_equal(sessions[8], np.arange(190, 200))


def test_cifar100_fscil_dataset(fscil_root, fmt):
    fmt.write_cifar100(fscil_root)
    data = fscil_splits.load_cifar100_fscil(fscil_root, download=False)
    assert data.name == "cifar100-fscil" and len(data.index_lists["sessions"]) == 9
    assert len(data.partition("train")) == 200


def test_cifar100_sessions_beyond_the_train_set_found(fscil_root, fmt):
    fmt.write_cifar100(fscil_root, per_class_train=1)  # 100 images, the lists index up to 199
    with pytest.raises(ClbenchError, match="index beyond the 100 CIFAR-100 training images"):
        fscil_splits.load_cifar100_fscil(fscil_root, download=False)


@pytest.mark.parametrize(
    "session_2, match",
    [
        ("1\nabc\n", "'abc' is not a training-set index"),
        ("50000\n", "beyond the 50,000"),
        ("5\n", "5 appears more than once"),
        ("-3\n", "'-3' is not"),
        ("\n\n", "is empty"),
    ],
)
def test_bad_cifar100_session_is_named(fscil_root, session_2, match):
    path = fscil_root / "fscil-splits" / "cifar100" / "session_2.txt"
    path.write_text(session_2)
    with pytest.raises(ClbenchError, match=match) as info:
        fscil_splits.load_cifar100_sessions(fscil_root)
    assert "session_" in str(info.value) and str(path.parent) in str(info.value)


def test_missing_session_list_says_where_to_get_it(fscil_root):
    path = fscil_root / "fscil-splits" / "cifar100" / "session_7.txt"
    path.unlink()
    with pytest.raises(ClbenchError, match=f"{path} not found: .*icoz69/CEC-CVPR2021.*data/index_list/cifar100"):
        fscil_splits.load_cifar100_sessions(fscil_root)


@pytest.mark.parametrize("benchmark", ["cifar100", "mini_imagenet"])
def test_full_length_session_1_with_wrong_md5_is_corrupt(fscil_root, benchmark):
    path = fscil_root / "fscil-splits" / benchmark / "session_1.txt"
    path.write_text("".join(f"{i}\n" for i in range(30_000)))  # the official length, not the official content
    load = fscil_splits.load_cifar100_sessions if benchmark == "cifar100" else fscil_splits.load_miniimagenet_fscil
    with pytest.raises(ClbenchError, match=f"{path} has the official 30000 rows but md5"):
        load(fscil_root)


# ---------------------------------------------------------------- mini-ImageNet FSCIL


def test_miniimagenet_fscil_dataset(fscil_root, fmt):
    data = fscil_splits.load_miniimagenet_fscil(fscil_root)
    train, test = data.partition("train"), data.partition("test")
    train_rows, test_rows = fmt.fscil_rows()
    assert data.name == "mini-imagenet-fscil" and train.class_names == tuple(fmt.FSCIL_CLASSES)
    assert train.images.shape == (len(train_rows), 3, 84, 84) and test.images.shape == (len(test_rows), 3, 84, 84)
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(11), 2))
    np.testing.assert_array_equal(test.labels, np.arange(11))
    sessions = data.index_lists["sessions"]
    assert [len(s) for s in sessions] == [6] + [2] * 8 and all(s.dtype == np.int64 for s in sessions)
    np.testing.assert_array_equal(sessions[0], [5, 4, 3, 2, 1, 0])  # session_1 lists the base images in reverse
    for k, rows in enumerate(sessions[1:]):
        assert set(train.labels[rows]) == {fmt.FSCIL_BASE + k}
    i = sessions[3][0]
    name = train.metadata["filename"][i]
    assert np.abs(train.images[i, :, 40, 40].astype(int) - fmt.color(name)).max() <= 4


def test_miniimagenet_fscil_reuses_its_cache(fscil_root, monkeypatch, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("fscil-cache")
    fscil_splits.load_miniimagenet_fscil(fscil_root, cache_dir=cache_dir)
    assert sorted(p.name.split("-")[1] for p in cache_dir.iterdir()) == ["test", "train"]
    monkeypatch.setattr(cache, "decode_image", lambda *a: pytest.fail("an image was decoded"))
    again = fscil_splits.load_miniimagenet_fscil(fscil_root, cache_dir=cache_dir)
    assert isinstance(again.partition("train").images, np.memmap)


def test_session_naming_a_file_train_csv_lacks_is_named(fscil_root):
    path = fscil_root / "fscil-splits" / "mini_imagenet" / "session_4.txt"
    path.write_text(path.read_text() + "MINI-ImageNet/train/n10000005/n1000000500000599.jpg\n")
    with pytest.raises(ClbenchError, match=f"{path} names 1 image.*train.csv does not list.*n1000000500000599.jpg"):
        fscil_splits.load_miniimagenet_fscil(fscil_root)


def test_session_filing_an_image_under_another_class_is_named(fscil_root):
    path = fscil_root / "fscil-splits" / "mini_imagenet" / "session_2.txt"
    path.write_text(path.read_text().replace("/n10000003/", "/n10000009/"))
    with pytest.raises(ClbenchError, match=f"{path} is corrupt .*filed under n10000009"):
        fscil_splits.load_miniimagenet_fscil(fscil_root)


def test_csv_naming_an_absent_image_is_named(fscil_root, fmt):
    """The official full CSV next to a partial image folder: one line naming the CSV and an absent file."""
    train, _ = fmt.fscil_rows()
    (fscil_root / "mini-imagenet" / "images" / train[-1][0]).unlink()
    with pytest.raises(ClbenchError, match=f"train.csv names 1 image.*{train[-1][0]}"):
        fscil_splits.load_miniimagenet_fscil(fscil_root)


def test_test_csv_with_a_class_train_csv_lacks(fscil_root, fmt):
    path = fscil_root / "fscil-splits" / "mini_imagenet" / "test.csv"
    fmt.write_csv(path, [("n9999999900000001.jpg", "n99999999")])
    with pytest.raises(ClbenchError, match="test.csv is corrupt .*n99999999"):
        fscil_splits.load_miniimagenet_fscil(fscil_root)


def test_missing_fscil_lists_say_what_to_put_where(tmp_path):
    with pytest.raises(ClbenchError, match="FSCIL mini-ImageNet lists not found in .*train.csv and test.csv.*CEC-CVPR"):
        fscil_splits.load_miniimagenet_fscil(tmp_path)


@pytest.fixture(scope="module")
def real_fscil(shared_data):
    if not (shared_data / "fscil-splits" / "mini_imagenet" / "train.csv").exists():
        pytest.skip("no FSCIL lists in the shared data")
    return shared_data


def test_real_cifar100_sessions_are_the_official_lists(real_fscil):
    sessions = fscil_splits.load_cifar100_sessions(real_fscil)  # session_1 is md5-verified
    assert [len(s) for s in sessions] == [30_000] + [25] * 8


def test_real_partial_fscil_lists_are_consistent(real_fscil):
    lists = fscil_splits.miniimagenet_lists(real_fscil)
    assert len(lists.class_names) == 100 and [len(s) for s in lists.sessions] == [9_959] + [25] * 8
    labels = lists.train.wnids
    assert set(labels[lists.sessions[0]]) == set(lists.class_names[:60])
    for k, rows in enumerate(lists.sessions[1:]):
        assert set(labels[rows]) == set(lists.class_names[60 + 5 * k : 65 + 5 * k])


def test_real_official_lists_with_partial_images_fail_in_one_line(real_fscil, tmp_path):
    """The published full lists (md5-verified session_1) over the partial image folder name an absent image."""
    official = real_fscil / "fscil-splits" / "mini_imagenet" / "official"
    if not official.is_dir():
        pytest.skip("no official FSCIL lists in the shared data")
    shutil.copytree(official, tmp_path / "fscil-splits" / "mini_imagenet")
    (tmp_path / "mini-imagenet").mkdir()
    (tmp_path / "mini-imagenet" / "images").symlink_to(real_fscil / "mini-imagenet" / "images")
    with pytest.raises(ClbenchError, match=r"train\.csv names \d+ image\(s\) absent from"):
        fscil_splits.load_miniimagenet_fscil(tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


# ---------------------------------------------------------------- status and prepare (clbench data)


def states(entries):
    return {e["name"]: e["state"] for e in entries}


def test_status_on_an_empty_root(tmp_path):
    entries = status.report(tmp_path)
    names = ["cifar100", "mini-imagenet", "mini-imagenet-fscil", "fscil-splits", "core50"]
    assert states(entries) == dict.fromkeys(names, "missing")
    assert all(set(e) == {"name", "state", "path", "detail"} and "\n" not in e["detail"] for e in entries)


def test_status_present_prepare_prepared(fscil_root, fmt):
    fmt.write_cifar100(fscil_root)
    fmt.write_miniimagenet(fscil_root)
    assert states(status.report(fscil_root)) == {
        "cifar100": "present", "mini-imagenet": "present", "mini-imagenet-fscil": "present", "fscil-splits": "present",
        "core50": "missing"}
    entries = status.prepare(fscil_root, ["mini-imagenet", "mini-imagenet-fscil"])
    assert states(entries) == {"mini-imagenet": "prepared", "mini-imagenet-fscil": "prepared"}
    assert "md5 differs" in status.report(fscil_root, ["cifar100"])[0]["detail"]


def test_status_reports_corruption(fscil_root, fmt):
    fmt.write_miniimagenet(fscil_root)
    status.prepare(fscil_root, ["mini-imagenet"])
    bad = next((fscil_root / "mini-imagenet" / "prepared").glob("val-*.npy"))
    bad.write_bytes(b"junk")
    (fscil_root / "fscil-splits" / "cifar100" / "session_3.txt").write_text("x\n")
    (fscil_root / "mini-imagenet" / "images" / fmt.fscil_rows()[1][0][0]).unlink()
    entries = {e["name"]: e for e in status.report(fscil_root)}
    assert entries["mini-imagenet"]["state"] == "corrupt" and str(bad) in entries["mini-imagenet"]["detail"]
    assert entries["fscil-splits"]["state"] == "corrupt" and "session_3.txt" in entries["fscil-splits"]["detail"]
    fscil = entries["mini-imagenet-fscil"]
    assert fscil["state"] == "corrupt" and "test.csv names 1 image" in fscil["detail"]


def test_prepare_keeps_going_and_reports_failures(tmp_path, fmt):
    fmt.write_miniimagenet(tmp_path)
    entries = {e["name"]: e for e in status.prepare(tmp_path)}
    assert entries["mini-imagenet"]["state"] == "prepared"
    assert entries["cifar100"]["state"] == "missing" and "cifar-100-python" in entries["cifar100"]["detail"]


def test_status_hook_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setattr(status, "CHECKS", dict(status.CHECKS))
    entry = {"name": "core50", "state": "missing", "path": "-", "detail": "-"}
    status.register("core50", lambda root, cache_dir: entry)
    assert status.report(tmp_path, ["core50"])[0]["state"] == "missing"
    with pytest.raises(ClbenchError, match="unknown dataset 'nope' .*core50"):
        status.report(tmp_path, ["nope"])
