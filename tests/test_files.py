"""AtomicFile: the target is replaced whole or not at all, and killed writers leave nothing behind for long;
usable_folder: a folder a run will use is checked before the run starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clbench.errors import ClbenchError
from clbench.files import AtomicFile, remove_orphaned_temporaries, usable_folder


def test_the_target_is_replaced_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with AtomicFile(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(KeyboardInterrupt):
        with AtomicFile(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


# --- temporaries left by killed writers --------------------------------------------------------

KILLED_WRITER = """
import sys, time
from pathlib import Path
from clbench.files import AtomicFile
with AtomicFile(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half written")
    print(tmp.name, flush=True)
    time.sleep(60)
"""


def temporary_of_a_killed_writer(target) -> str:
    """Start a writer, kill -9 it mid-write, and return the name of the temporary it left behind."""
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    name = writer.stdout.readline().strip()
    writer.kill()
    writer.wait()
    writer.stdout.close()
    assert name and (target.parent / name).exists()
    return name


def test_a_killed_writers_temporary_is_removed_by_the_next_writer(tmp_path):
    orphan = temporary_of_a_killed_writer(tmp_path / "checkpoint.pt")
    assert f".{os.getpid()}@" not in orphan and orphan.startswith(".checkpoint.pt.")
    with AtomicFile(tmp_path / "other.npy") as tmp:  # any writer in the same folder cleans up
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npy"]


def test_live_foreign_and_unknown_temporaries_are_kept(tmp_path):
    live = AtomicFile(tmp_path / "a.csv")  # this process is alive and still writing
    keep = {
        live.tmp.name,
        f".b.csv.{os.getpid() + 10**9}@another-host.abcd1234.tmp",  # another machine's writer (shared folder)
        ".c.npy.abc123.tmp",  # not of our naming
        "data.tmp",
    }
    for name in keep - {live.tmp.name}:
        (tmp_path / name).write_text("x")
    dead = temporary_of_a_killed_writer(tmp_path / "d.npy")
    assert remove_orphaned_temporaries(tmp_path) == [tmp_path / dead]
    assert {p.name for p in tmp_path.iterdir()} == keep
    with live as tmp:
        tmp.write_text("done")
    assert (tmp_path / "a.csv").read_text() == "done"


# --- folders a run will write to ---------------------------------------------------------------

def test_usable_folder_accepts_existing_and_creatable_folders(tmp_path):
    assert usable_folder(tmp_path, "--data-root", write=True) == tmp_path
    assert usable_folder(tmp_path / "new" / "deeper", "--cache-dir", write=True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_usable_folder_refuses_a_file_at_the_path_or_above(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClbenchError, match=r"^--data-root .*file is a file, not a folder: give a folder"):
        usable_folder(tmp_path / "file", "--data-root")
    with pytest.raises(ClbenchError, match=r"^checkpoint folder .*file/checkpoints cannot be a folder: .* is a file"):
        usable_folder(tmp_path / "file" / "checkpoints", "checkpoint folder")


def test_usable_folder_refuses_to_write_into_a_read_only_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o555)
    try:
        assert usable_folder(shared, "--data-root") == shared  # reading is fine
        with pytest.raises(ClbenchError, match=r"^--cache-dir .*shared/prepared cannot be written \(.*shared is read"):
            usable_folder(shared / "prepared", "--cache-dir", write=True)
    finally:
        shared.chmod(0o755)


def test_usable_folder_refuses_an_unreadable_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.R_OK)  # as a non-root user would see 0o000
    with pytest.raises(ClbenchError, match=r"^--data-root .* cannot be read \(no permission\)"):
        usable_folder(tmp_path, "--data-root")


def test_a_written_file_gets_the_mode_a_plain_open_would_give(tmp_path):
    target = tmp_path / "out.bin"
    with AtomicFile(target) as tmp:
        tmp.write_bytes(b"x")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
