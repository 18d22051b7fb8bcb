"""Resuming interrupted runs: after each finished experience the runner saves what it needs to carry
on (the learner's state, the results so far, every random generator) to one file, atomically; a
later identical run loads it and continues from the next experience with the same result. While a
run is in progress it holds a lock beside its checkpoint, so that an identical run started meanwhile
stops at once instead of resuming a checkpoint that is still being written."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: runs are not locked)
    fcntl = None  # type: ignore[assignment]

import numpy as np
import torch

from clbench import __version__
from clbench.errors import ClbenchError
from clbench.files import AtomicFile, marked_read_only
from clbench.precision import with_precision
from clbench.revision import source_hash

if TYPE_CHECKING:
    from clbench.scenario import Scenario

FORMAT = 3
"""The layout of a checkpoint's content; bumped whenever it changes, and a file of another format is refused."""

HELD_BRIEFLY_SECONDS = 0.5
"""How long a run retries a lock that another process holds before it reports the same run in progress:
a run removing stale lock files (`remove_stale_locks`) holds each for an instant."""


def run_key(scenario: Scenario, learner_cls: type, config: dict[str, Any], seed: int, device: torch.device) -> str:
    """What identifies a run, hashed: the scenario's whole spec (its precision resolved for `device`)
    and fingerprint, the learner class, its hyper-parameters, the seed, the device, the clbench
    version and source, and torch's thread count and deterministic flag now (a row records them: a
    run resumed under other ones would record arithmetic it did not all use). Only a checkpoint with
    the same key is resumed."""
    fields = {
        "spec": dataclasses.asdict(with_precision(scenario, device).spec),
        "fingerprint": scenario.fingerprint,
        "learner": f"{learner_cls.__module__}.{learner_cls.__qualname__}",
        "name": learner_cls.name,
        "config": config,
        "seed": seed,
        "device": str(device),
        "version": __version__,
        "source": source_hash(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def random_states() -> dict[str, Any]:
    """The global generators' states (Python, NumPy, torch CPU and CUDA), weights_only-loadable."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what `random_states` returned."""
    random.setstate(_tuples(states["python"]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples random.getstate gave (a reload may give lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class Checkpoint:
    """One run's checkpoint file `folder/<key>.pt`, and its lock file `folder/<key>.lock`."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / f"{key}.pt"
        self.lock_path = Path(folder) / f"{key}.lock"
        self.key = key
        self.writable = True
        self._lock: int | None = None

    def unusable(self, why: str) -> ClbenchError:
        """The one-line error for a checkpoint this run cannot resume from (`why` says what is wrong)."""
        return ClbenchError(f"the checkpoint {self.path} {why}; delete it, or rerun with --no-resume to start this "
                            "run over")

    def load(self, fields: Iterable[str] = ()) -> dict[str, Any] | None:
        """The saved progress, or None when there is none. A file that cannot be read, belongs to another
        run, was written in another checkpoint format or lacks one of `fields` is one clear error."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise self.unusable(f"cannot be read ({type(exc).__name__})") from exc
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            raise self.unusable("belongs to another run")
        if saved.get("format") != FORMAT:
            written = f"format {saved['format']!r}" if "format" in saved else "an older format"
            raise self.unusable(f"was written in {written}; this clbench reads checkpoint format {FORMAT}")
        missing = [name for name in fields if name not in saved]
        if missing:
            raise self.unusable(f"lacks the field '{missing[0]}'")
        return saved

    def save(self, progress: dict[str, Any]) -> None:
        """Write `progress` (with this run's key and the format) atomically: a temporary file, then a
        rename. A folder that cannot be written gives one warning, and the run goes on unsaved."""
        if not self.writable:
            return
        try:
            if marked_read_only(self.path.parent):
                raise PermissionError("the folder is marked read-only")
            target = AtomicFile(self.path)
        except OSError as exc:
            self._unwritable(exc)
            return
        with target as tmp:
            torch.save({**progress, "key": self.key, "format": FORMAT}, tmp)

    def remove(self) -> None:
        """Delete the checkpoint (its run is stored); a folder that refuses is one warning, not a failure."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            warnings.warn(f"cannot remove the finished run's checkpoint {self.path} ({exc}); delete it by hand")

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold this run's exclusive lock for the block (re-entrant); the lock file is removed at the end.

        An identical run holding it already (in any process) is one clear error naming its pid. The lock
        is an `fcntl.flock` on `<key>.lock`: the kernel releases it when its holder dies, even by kill -9,
        and the file that a killed holder leaves is removed by the next run that claims a lock in the
        folder (`remove_stale_locks`). A folder that cannot be written gives the same warning as `save`,
        and the block runs unlocked.
        """
        if self._lock is not None:
            yield
            return
        self._lock = self._acquire()
        if self._lock is not None:
            remove_stale_locks(self.path.parent, self.lock_path)
        try:
            yield
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                self.lock_path.unlink(missing_ok=True)
                os.close(lock)

    def _acquire(self) -> int | None:
        """The locked lock file's descriptor (this pid written in it), or None where runs cannot be locked."""
        if fcntl is None or not self.writable:
            return None
        try:
            if marked_read_only(self.path.parent):
                raise PermissionError("the folder is marked read-only")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            patience = time.monotonic() + HELD_BRIEFLY_SECONDS
            while True:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if time.monotonic() < patience:  # perhaps another run removing it as stale: try again
                        os.close(fd)
                        time.sleep(0.02)
                        continue
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise ClbenchError(f"the same run is in progress (pid {holder}): wait for it to finish, or stop "
                                       f"it (its lock: {self.lock_path})") from None
                if _same_file(fd, self.lock_path):
                    break
                os.close(fd)  # its holder removed the file as we locked it: lock the file now at that path
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except OSError as exc:
            self._unwritable(exc)
            return None

    def _unwritable(self, exc: OSError) -> None:
        self.writable = False
        warnings.warn(f"cannot write run checkpoints to {self.path.parent} ({exc}); this run cannot be resumed if "
                      "interrupted (give --cache-dir DIR)", stacklevel=3)


def remove_stale_locks(folder: Path, keep: Path) -> None:
    """Remove the run lock files in `folder` (all but `keep`) that no process holds: a run killed by
    kill -9 leaves its file, whose lock the kernel released. Each is locked before it is removed, and
    removed only while it is still the file at its path, so the lock of a live run is never touched (a
    run starting on a file at that instant waits `HELD_BRIEFLY_SECONDS` and locks the path afresh).
    A file that cannot be opened or removed is left as it is."""
    for path in sorted(folder.glob("*.lock")):
        if path == keep:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):  # nobody can replace it while we hold its lock
                path.unlink()
        except OSError:  # held by a live run (BlockingIOError), or not ours to remove
            pass
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path`."""
    try:
        opened, current = os.fstat(fd), os.stat(path)
        return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)
    except FileNotFoundError:
        return False
