"""Writing files safely: never half-written (a temporary file beside the target, renamed onto it
when complete), no temporaries left behind by killed writers, never into a folder shared read-only,
and every folder checked before a run starts writing to it."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from clbench.errors import ClbenchError

# this process's writer tag in temporary names: `.<target>.<pid>@<host>.<random>.tmp`
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "localhost"
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[a-z0-9_]+\.tmp$")


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def marked_read_only(folder: Path) -> bool:
    """True if the nearest existing folder has no write permission bit at all: a data folder shared
    read-only is left alone even by root, whom the kernel would let write."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing is not None and not existing.stat().st_mode & 0o222


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (where that cannot be told: assume it does)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_orphaned_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of our naming in `folder` whose writer (same host) no longer runs, as a
    writer killed mid-write leaves them; returns what was removed. A live writer's file is never touched."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMPORARY.match(name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            try:
                (Path(folder) / name).unlink()
            except OSError:
                continue
            removed.append(Path(folder) / name)
    return removed


class AtomicFile:
    """`with AtomicFile(path) as tmp:` write `tmp` (an empty file beside `path`); it is renamed onto
    `path` when the block ends without error and removed otherwise, so `path` is never half-written.

    The constructor creates the folder, removes temporaries that killed writers left in it, and creates
    the temporary file (named after this process, so that a later writer can tell it is orphaned): an
    OSError there means the folder cannot be written, before any work is done.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(self.path.parent)
        prefix = f".{self.path.name}.{os.getpid()}@{_HOST}."
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=prefix, suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's private 0600
        os.close(fd)
        self.tmp = Path(name)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            try:
                os.replace(self.tmp, self.path)
                return
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise
        self.tmp.unlink(missing_ok=True)


def usable_folder(path: str | os.PathLike, what: str, write: bool = False) -> Path:
    """`path` as a Path, after checking that it can serve as a folder; else a one-line ClbenchError.

    Refused: a regular file at `path` or at any parent (the folder could never be created), an existing
    folder that cannot be read, and with `write` one that cannot be written (no permission, or marked
    read-only). A folder that does not exist yet is fine if it can be created. `what` names the setting
    in messages, e.g. "--data-root".
    """
    path = Path(path).expanduser()
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be a folder: {existing} is a file"
        raise ClbenchError(f"{what} {path} {where}, not a folder: give a folder (it is created if absent)")
    if existing == path and not os.access(path, os.R_OK | os.X_OK):
        raise ClbenchError(f"{what} {path} cannot be read (no permission): give a folder you can read")
    if write and (marked_read_only(existing) or not os.access(existing, os.W_OK | os.X_OK)):
        raise ClbenchError(f"{what} {path} cannot be written ({existing} is read-only): give a folder you can "
                           "write to")
    return path
