"""Which code computed a run: a hash of the installed clbench package's source (every file that can
change a number: its `.py` files and the shipped scenario specs), and the git commit it was
checked out from, where there is one."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import resources
from pathlib import Path

DIRTY = "-dirty"
"""Appended to the commit when the package's files differ from it (edited, added or deleted)."""

_GIT_SECONDS = 10


def _roots() -> tuple[Path, Path]:
    """The folders of the clbench package and of its shipped scenario specs."""
    return Path(__file__).resolve().parent, Path(str(resources.files("clbench.scenario_specs"))).resolve()


def _package_files() -> list[tuple[str, Path]]:
    """(name shown in the hash, path) of every `.py` file of the clbench package and every shipped
    scenario spec, sorted by name."""
    package, specs = _roots()
    files = [(f"clbench/{p.relative_to(package).as_posix()}", p) for p in package.rglob("*.py")]
    files += [(f"scenario_specs/{p.name}", p) for p in specs.glob("*.toml")]
    return sorted(files)


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 (first 16 hex digits) over the names and bytes of `_package_files()`: equal hashes,
    the same clbench source. Computed once per process (the code it describes is what was loaded)."""
    digest = hashlib.sha256()
    for name, path in _package_files():
        content = path.read_bytes()
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def _git(folder: Path, *args: str) -> str | None:
    """`git -C folder ARGS` output, or None where git is missing, fails or is slow."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=_GIT_SECONDS,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """The git commit (12 hex digits, more if ambiguous) the clbench package is checked out from, with
    `DIRTY` appended when its files (the package and the scenario specs) differ from that commit; ""
    when the package is not tracked by git (an installed wheel, no git)."""
    package, specs = _roots()
    if not _git(package, "ls-files", "--", "__init__.py"):  # not tracked here: an unrelated repository above
        return ""
    commit = _git(package, "rev-parse", "--short=12", "HEAD")
    if not commit:
        return ""
    changes = _git(package, "status", "--porcelain", "--untracked-files=all", "--", str(package), str(specs))
    return commit + ("" if changes == "" else DIRTY)
