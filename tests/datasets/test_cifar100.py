"""CIFAR-100 from tiny files in the official python-version format; missing and corrupt files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from clbench.datasets import cifar100
from clbench.errors import ClbenchError


@pytest.mark.parametrize("bytes_keys", [True, False], ids=["bytes-keys", "str-keys"])
def test_load_shapes_labels_names_and_pixel_layout(tmp_path, fmt, bytes_keys):
    written = fmt.write_cifar100(tmp_path, per_class_train=3, per_class_test=1, bytes_keys=bytes_keys)
    data = cifar100.load(tmp_path, download=False)
    assert data.name == "cifar100" and list(data.partitions) == ["train", "test"] and data.num_classes == 100
    for split, n in (("train", 300), ("test", 100)):
        part = data.partition(split)
        raw, labels = written[split]
        assert part.images.shape == (n, 3, 32, 32) and part.images.dtype == np.uint8
        assert part.labels.dtype == np.int64
        np.testing.assert_array_equal(part.labels, labels)
        # channel c, row y, column x is byte c*1024 + y*32 + x of the row
        assert part.images[5, 2, 7, 9] == raw[5, 2 * 1024 + 7 * 32 + 9]
        np.testing.assert_array_equal(part.images[:, 0].reshape(n, -1), raw[:, :1024])
    assert data.partition("train").class_names[:2] == ("class_00", "class_01")
    assert not cifar100.md5_ok(tmp_path)


def test_missing_without_download_names_the_file_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar100, "_download", lambda root: pytest.fail("download attempted"))
    with pytest.raises(ClbenchError) as info:
        cifar100.load(tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python" / "meta") in message and cifar100.URL in message and "\n" not in message


def test_missing_with_failed_download_says_so(tmp_path):
    with pytest.raises(ClbenchError, match="automatic download failed .*network disabled") as info:
        cifar100.load(tmp_path)  # the autouse fixture makes the download fail as it does offline
    assert cifar100.URL in str(info.value)


def test_successful_download_is_used(tmp_path, monkeypatch, fmt):
    calls = []
    monkeypatch.setattr(cifar100, "_download", lambda root: (calls.append(root), fmt.write_cifar100(root)))
    assert len(cifar100.load(tmp_path).partition("test")) == 100
    assert calls == [tmp_path]
    cifar100.load(tmp_path)  # present now: no second download
    assert len(calls) == 1


def _rewrite(path, mutate):
    with open(path, "rb") as f:
        obj = pickle.load(f, encoding="latin1")
    with open(path, "wb") as f:
        pickle.dump(mutate(obj), f, protocol=2)


@pytest.mark.parametrize(
    "file, corrupt, match",
    [
        ("train", lambda p: p.write_bytes(p.read_bytes()[:1000]), "corrupt"),
        ("test", lambda p: p.write_bytes(b""), "corrupt"),
        ("train", lambda p: _rewrite(p, lambda o: {**o, b"data": o[b"data"][:, :3000]}), "N x 3072"),
        ("test", lambda p: _rewrite(p, lambda o: {**o, b"fine_labels": o[b"fine_labels"][:-1]}), "fine_labels"),
        ("test", lambda p: _rewrite(p, lambda o: {**o, b"fine_labels": [100] * len(o[b"fine_labels"])}), "outside"),
        ("train", lambda p: _rewrite(p, lambda o: {k: v for k, v in o.items() if k != b"data"}), "no 'data'"),
        ("meta", lambda p: _rewrite(p, lambda o: {b"fine_label_names": o[b"fine_label_names"][:99]}), "99 fine_label"),
        ("meta", lambda p: _rewrite(p, lambda o: [1, 2, 3]), "not a dict"),
        ("meta", lambda p: _rewrite(p, lambda o: {b"fine_label_names": 5}), "not a list of names"),
        ("train", lambda p: _rewrite(p, lambda o: {**o, b"data": o[b"data"].tolist()}), "data is a list"),
        ("train", lambda p: _rewrite(p, lambda o: {**o, b"data": o[b"data"][:0], b"fine_labels": []}), "no images"),
        ("test", lambda p: _rewrite(p, lambda o: {**o, b"fine_labels": [[0]] + o[b"fine_labels"][1:]}), "integers"),
        ("test", lambda p: _rewrite(p, lambda o: {**o, b"fine_labels": [0.5] * len(o[b"fine_labels"])}), "integers"),
    ],
    ids=["truncated", "empty", "width", "label-count", "label-range", "no-data", "names", "not-dict",
         "names-not-list", "data-not-array", "no-images", "ragged-labels", "float-labels"],
)
def test_corrupt_file_is_one_clear_error_naming_it(cifar_root, file, corrupt, match):
    path = cifar_root / "cifar-100-python" / file
    corrupt(path)
    with pytest.raises(ClbenchError, match=match) as info:
        cifar100.load(cifar_root, download=False)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
