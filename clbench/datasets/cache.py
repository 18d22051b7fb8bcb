"""Prepare-once uint8 array caches: decode image files once into a `.npy`, memory-map it afterwards.

`cached_array` is the generic part (atomic write, shape check, memory-mapped reads); `cached_images`
is what every image-folder source uses: decode a list of files in parallel into one cached array.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clbench.errors import ClbenchError
from clbench.files import AtomicFile, marked_read_only

__all__ = ["cache_key", "cache_state", "cached_array", "cached_images", "corrupt_cache", "decode_image",
           "decode_images_into"]

CHUNK = 256  # files per thread-pool task


def _file_mode() -> int:
    """rw for everyone the umask allows (mkstemp alone would leave caches private to their builder)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def corrupt_cache(path: Path, why: str) -> ClbenchError:
    """The one-line error for a prepared cache that `cache_state` found corrupt for reason `why`."""
    return ClbenchError(f"prepared cache {path} is corrupt ({why}): delete it; it is rebuilt on next use or by "
                        "`clbench data --prepare`")


def cache_key(names: Sequence[str], *extra: object) -> str:
    """A short hash of the source file list (and any parameters), used in cache file names."""
    digest = hashlib.sha1("\n".join(map(str, names)).encode())
    for item in extra:
        digest.update(f"\0{item}".encode())
    return digest.hexdigest()[:12]


def cache_state(path: Path, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> str:
    """'absent', 'ok', or why the cache at `path` is corrupt; reads only the `.npy` header."""
    if not path.exists():
        return "absent"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(f)
            else:
                return f"unsupported .npy format version {version}"
            data_bytes = path.stat().st_size - f.tell()
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable header: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
    found, fortran, found_dtype = header
    expected = np.dtype(dtype)
    if found_dtype != expected or tuple(found) != tuple(shape) or fortran:
        return f"holds {found_dtype} {tuple(found)}, expected {expected} {tuple(shape)}"
    if data_bytes < int(np.prod(shape)) * expected.itemsize:
        return f"truncated: {data_bytes} of {int(np.prod(shape)) * expected.itemsize} data bytes"
    return "ok"


def _open(path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    state = cache_state(path, shape, dtype)
    if state != "ok":
        raise corrupt_cache(path, state)
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise corrupt_cache(path, str(e)) from None


def cached_array(path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None],
                 dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """A read-only memory map of the array cached at `path`, building it first if absent.

    `fill(out)` writes every element of a writable array of `shape` and `dtype`. It fills a temporary file in
    the same folder, which is flushed, fsynced and renamed onto `path` only when complete; on any failure
    or interrupt the temporary file is removed. A cache of another shape or dtype is a ClbenchError.
    If the folder cannot be written, the array is built in memory for this run (with a warning).
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if path.exists():
        return _open(path, shape, dtype)
    if 0 in shape:  # nothing to cache (and an empty array cannot be memory-mapped)
        return np.empty(shape, dtype=dtype)
    try:
        if marked_read_only(path.parent):
            raise PermissionError("the folder is marked read-only")
        target = AtomicFile(path)
    except OSError as e:
        warnings.warn(f"cannot write the prepared cache {path} ({e}); decoding in memory for this run "
                      "(give --cache-dir DIR to keep prepared caches elsewhere)", stacklevel=2)
        out = np.empty(shape, dtype=dtype)
        fill(out)
        return out
    with target as tmp:
        os.chmod(tmp, FILE_MODE)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    _fsync_dir(path.parent)
    return _open(path, shape, dtype)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One image file as a uint8 C x H x W RGB array, resized to `size` x `size` if it is not already."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.LANCZOS)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ClbenchError(f"image file {path} is missing") from None
    except UnidentifiedImageError:
        raise ClbenchError(f"image file {path} cannot be decoded (not an image): replace it with a good copy") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ClbenchError(f"image file {path} cannot be decoded ({e}): replace it with a good copy") from None
    return arr.transpose(2, 0, 1)


def decode_images_into(files: Sequence[str | Path], out: np.ndarray, size: int, desc: str = "decoding") -> None:
    """Decode `files[i]` into `out[i]` with a thread pool (PIL releases the GIL) and a progress bar."""
    from tqdm import tqdm

    def work(start: int) -> int:
        stop = min(start + CHUNK, len(files))
        for i in range(start, stop):
            out[i] = decode_image(files[i], size)
        return stop - start

    workers = min(32, (os.cpu_count() or 1) + 2)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with tqdm(total=len(files), desc=desc, unit="img", disable=None) as bar:
            for done in pool.map(work, range(0, len(files), CHUNK)):
                bar.update(done)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def cached_images(files: Sequence[str | Path], path: Path, size: int, desc: str = "decoding") -> np.ndarray:
    """The N x 3 x size x size uint8 array of `files`, decoded once into the cache at `path`."""
    shape = (len(files), 3, size, size)
    return cached_array(path, shape, lambda out: decode_images_into(files, out, size, desc))
