"""Writing files safely: never half-written (a temporary file beside the target, renamed onto it
when complete) and never into a folder shared read-only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType


def marked_read_only(folder: Path) -> bool:
    """True if the nearest existing folder has no write permission bit at all: a data folder shared
    read-only is left alone even by root, whom the kernel would let write."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing is not None and not existing.stat().st_mode & 0o222


class AtomicFile:
    """`with AtomicFile(path) as tmp:` write `tmp` (an empty file beside `path`); it is renamed onto
    `path` when the block ends without error and removed otherwise, so `path` is never half-written.

    The constructor creates the folder and the temporary file: an OSError there means the folder
    cannot be written, before any work is done.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
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
