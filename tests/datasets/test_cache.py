"""The prepare-once uint8 cache: atomic builds, memory-mapped reuse, corrupt caches, image decoding."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clbench.datasets import cache
from clbench.datasets.cache import cache_key, cache_state, cached_images, cached_array, decode_image
from clbench.errors import ClbenchError

SHAPE = (5, 3, 4, 4)
EXPECTED = np.arange(np.prod(SHAPE), dtype=np.int64).reshape(SHAPE).astype(np.uint8)


def fill(out: np.ndarray) -> None:
    out[...] = EXPECTED


def never(out: np.ndarray) -> None:
    raise AssertionError("the cache was rebuilt although it exists")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_build_then_memory_mapped_reuse(tmp_path):
    path = tmp_path / "sub" / "x.npy"
    first = cached_array(path, SHAPE, fill)
    assert isinstance(first, np.memmap) and not first.flags.writeable
    np.testing.assert_array_equal(first, EXPECTED)
    second = cached_array(path, SHAPE, never)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, EXPECTED)
    assert leftovers(path.parent) == ["x.npy"]
    assert cache_state(path, SHAPE) == "ok"


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_build_leaves_nothing_and_next_run_rebuilds(tmp_path, error):
    path = tmp_path / "x.npy"

    def half_then_stop(out):
        out[:2] = 7
        raise error("stop")

    with pytest.raises(error):
        cached_array(path, SHAPE, half_then_stop)
    assert leftovers(tmp_path) == []
    np.testing.assert_array_equal(cached_array(path, SHAPE, fill), EXPECTED)


def test_stale_temporary_of_a_killed_build_is_ignored(tmp_path):
    path = tmp_path / "x.npy"
    (tmp_path / ".x.npy.abc123.tmp").write_bytes(b"half written")
    np.testing.assert_array_equal(cached_array(path, SHAPE, fill), EXPECTED)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: np.save(p, np.zeros((4, 3, 4, 4), np.uint8)),  # wrong shape
        lambda p: np.save(p, np.zeros(SHAPE, np.float32)),  # wrong dtype
        lambda p: p.write_bytes(b"not a numpy file at all"),
        lambda p: (np.save(p, EXPECTED), p.write_bytes(p.read_bytes()[:-10])),  # truncated
    ],
    ids=["shape", "dtype", "garbage", "truncated"],
)
def test_corrupt_cache_is_one_clear_error_naming_the_file(tmp_path, write):
    path = tmp_path / "x.npy"
    write(path)
    with pytest.raises(ClbenchError, match="delete it; it is rebuilt on next use") as info:
        cached_array(path, SHAPE, never)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert cache_state(path, SHAPE) not in ("ok", "absent")


def test_unwritable_folder_builds_in_memory_with_a_warning(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.warns(UserWarning, match="cannot write the prepared cache"):
        out = cached_array(tmp_path / "x.npy", SHAPE, fill)
    np.testing.assert_array_equal(out, EXPECTED)
    assert leftovers(tmp_path) == []


def test_empty_array_needs_no_file(tmp_path):
    assert cached_array(tmp_path / "x.npy", (0, 3, 4, 4), never).shape == (0, 3, 4, 4)
    assert leftovers(tmp_path) == []


def test_cache_key_depends_on_names_and_parameters():
    assert cache_key(["a", "b"], 84) == cache_key(["a", "b"], 84)
    assert len({cache_key(["a", "b"], 84), cache_key(["b", "a"], 84), cache_key(["a", "b"], 32)}) == 3


def test_decode_image_converts_and_resizes(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (30, 20), 100).save(grey)
    arr = decode_image(grey, 8)
    assert arr.shape == (3, 8, 8) and arr.dtype == np.uint8 and (arr == 100).all()


@pytest.mark.parametrize("content, match", [(None, "is missing"), (b"\xff\xd8 truncated jpeg", "cannot be decoded"),
                                            (b"", r"cannot be decoded \(not an image\): replace it")],
                         ids=["missing", "corrupt", "empty"])
def test_bad_image_is_named_and_no_cache_is_left(tmp_path, content, match):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, i, i)).save(files[-1])
    if content is None:
        files[1].unlink()
    else:
        files[1].write_bytes(content)
    target = tmp_path / "out" / "imgs.npy"
    with pytest.raises(ClbenchError, match=rf"^image file {files[1]} {match}"):
        cached_images([str(f) for f in files], target, 8)
    assert leftovers(target.parent) == []


def test_cached_images_decodes_in_order_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CHUNK", 2)
    files = []
    for i in range(7):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(files[-1])
    out = cached_images(files, tmp_path / "imgs.npy", 8)
    np.testing.assert_array_equal(out[:, :, 0, 0], [[i, 2 * i, 3 * i] for i in range(7)])


def test_a_folder_marked_read_only_is_never_written_even_by_root(tmp_path):
    import os

    import numpy as np
    import pytest

    from clbench.datasets.cache import cached_array

    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.warns(UserWarning, match="decoding in memory"):
            out = cached_array(folder / "prepared" / "x.npy", (2, 3), lambda a: a.fill(7))
        assert (out == 7).all() and list(folder.iterdir()) == []
    finally:
        os.chmod(folder, 0o755)
