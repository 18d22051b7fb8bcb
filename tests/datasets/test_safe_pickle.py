"""No pickle the suite reads may run code: a crafted file is refused with one line, and nothing runs."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from clbench.cli import main
from clbench.datasets import cifar100, core50, miniimagenet, safe_pickle
from clbench.errors import ClbenchError


class Exploit:
    """Unpickling this runs `touch MARKER` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant(path: Path, marker: Path) -> None:
    """Replace `path` with a pickle that runs code, inside the kind of dict the real files hold."""
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros(3, np.uint8), "payload": [Exploit(marker)]}, f, protocol=2)


def test_the_exploit_does_run_under_plain_pickle(tmp_path):
    """The control: without the restricted unpickler, this file does run code."""
    marker = tmp_path / "marker"
    plant(tmp_path / "x.pkl", marker)
    with open(tmp_path / "x.pkl", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def write_core50_lists(root: Path) -> None:
    """The smallest valid paths.pkl / LUP.pkl / labels.pkl: two images, one NI run (batch, test)."""
    folder = root / core50.FOLDER
    folder.mkdir(parents=True)
    for name, obj in (("paths.pkl", ["s1/o1/C_01_01_000.png", "s3/o1/C_03_01_000.png"]),
                      ("LUP.pkl", {"ni": [[[0], [1]]]}), ("labels.pkl", {"ni": [[[0], [0]]]})):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)


def _cifar(root: Path, fmt) -> None:
    fmt.write_cifar100(root)


def _mini(root: Path, fmt) -> None:
    fmt.write_mini_pickles(root)


def _core50(root: Path, fmt) -> None:
    write_core50_lists(root)


# every pickle the suite reads: (writer of valid files, the file, its loader)
PICKLES = [
    *((_cifar, f"cifar-100-python/{n}", cifar100.load) for n in ("meta", "train", "test")),
    *((_mini, f"mini-imagenet/mini-imagenet-cache-{s}.pkl", miniimagenet.load) for s in miniimagenet.SPLITS),
    *((_core50, f"core50/{n}", core50.load) for n in ("paths.pkl", "LUP.pkl", "labels.pkl")),
]


@pytest.mark.parametrize("write, name, load", PICKLES, ids=[p[1] for p in PICKLES])
def test_every_pickle_the_suite_reads_refuses_code(tmp_path, fmt, write, name, load):
    root, marker = tmp_path / "data", tmp_path / "marker"
    write(root, fmt)
    plant(root / name, marker)
    with pytest.raises(ClbenchError) as info:
        load(root)
    message = str(info.value)
    assert "\n" not in message and str(root / name) in message
    assert f"{os.system.__module__}.system" in message and "may not run code" in message
    assert not marker.exists()


@pytest.mark.parametrize("args", [[], ["--prepare"], ["--prepare", "cifar100", "mini-imagenet", "core50"]],
                         ids=["report", "prepare-all", "prepare-named"])
def test_the_data_command_runs_no_code_either(tmp_path, fmt, capsys, args):
    root, marker = tmp_path / "data", tmp_path / "marker"
    for write, name, _ in PICKLES:
        if not (root / name).exists():
            write(root, fmt)
    for _, name, _ in PICKLES[::3]:  # one planted file per dataset: cifar meta, mini train, core50 paths
        plant(root / name, marker)
    assert main(["data", "--data-root", str(root), *args]) == 1  # corrupt datasets fail the command
    out = capsys.readouterr().out
    assert "may not run code" in out and not marker.exists()


def test_the_types_of_official_files_load(tmp_path):
    """Python 3 pickles at every protocol and Python 2 spellings of the same globals load unchanged."""
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [np.int64(3), 2**70, 1.5, None, b""],
           "none": np.zeros((0, 3072), np.uint8),
           "names": (b"apple", "pear"), "meta": collections.OrderedDict(a={1, 2}), "t": np.zeros((2, 2)).T}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        loaded = safe_pickle.load(path, "test file", "fix it")
        np.testing.assert_array_equal(loaded[b"data"], obj[b"data"])
        np.testing.assert_array_equal(loaded["t"], obj["t"])
        assert loaded["none"].shape == (0, 3072) and loaded["none"].dtype == np.uint8
        assert loaded["labels"] == obj["labels"] and loaded["names"] == obj["names"] and loaded["meta"] == obj["meta"]
    # what Python 2's cPickle wrote for CIFAR-100 (numpy.core spellings, str as latin-1 bytes)
    py2 = (b"\x80\x02}q\x00U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
           b"\x85U\x01b\x87Rq\x04(K\x01K\x02\x85cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ"
           b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x07\xe9tbs.")
    (tmp_path / "py2.pkl").write_bytes(py2)
    loaded = safe_pickle.load(tmp_path / "py2.pkl", "test file", "fix it")
    np.testing.assert_array_equal(loaded["data"], np.array([7, 233], np.uint8))


def test_truncated_unreadable_and_absent_files(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)})[:-30])
    with pytest.raises(ClbenchError, match=r"^test file .*x\.pkl is corrupt \(.*\): fix it$"):
        safe_pickle.load(path, "test file", "fix it")
    with pytest.raises(ClbenchError, match="cannot be read"):
        safe_pickle.load(tmp_path, "test file", "fix it")
    with pytest.raises(FileNotFoundError):  # the caller says where the file comes from
        safe_pickle.load(tmp_path / "absent.pkl", "test file", "fix it")
