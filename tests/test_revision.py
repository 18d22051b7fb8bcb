"""Which code computed a run (clbench.revision): the source hash follows every byte and name of the
package's files; the git revision is the commit, marked dirty when the files differ from it."""

from __future__ import annotations

import pytest

from clbench import revision


@pytest.fixture
def package(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "s.toml").write_text("epochs = 5\n")
    files = [("clbench/a.py", tmp_path / "a.py"), ("scenario_specs/s.toml", tmp_path / "s.toml")]
    monkeypatch.setattr(revision, "_package_files", lambda: files)
    return tmp_path, files


def test_the_source_hash_changes_with_any_byte_or_name_of_the_package_files(package):
    folder, files = package
    first = revision.source_hash.__wrapped__()
    assert first == revision.source_hash.__wrapped__() and len(first) == 16
    (folder / "s.toml").write_text("epochs = 6\n")  # a scenario spec changes a number too
    second = revision.source_hash.__wrapped__()
    files[0] = ("clbench/b.py", folder / "a.py")  # the same bytes under another name
    assert len({first, second, revision.source_hash.__wrapped__()}) == 3


@pytest.mark.parametrize(("tracked", "status", "expected"), [
    ("__init__.py", "", "0123456789ab"),
    ("__init__.py", " M clbench/runner.py", "0123456789ab-dirty"),
    ("__init__.py", "?? clbench/new.py", "0123456789ab-dirty"),
    ("__init__.py", None, "0123456789ab-dirty"),  # git status failed: not known to be clean
    ("", "", ""),  # the package is not tracked by the repository around it (a venv inside a project)
    (None, "", ""),  # no git, or not a repository
])
def test_the_code_revision_is_the_commit_marked_dirty_when_the_files_differ(monkeypatch, tracked, status, expected):
    answers = {"ls-files": tracked, "rev-parse": "0123456789ab", "status": status}
    monkeypatch.setattr(revision, "_git", lambda folder, command, *args: answers[command])
    assert revision.code_revision.__wrapped__() == expected


def test_the_hashed_files_are_the_packages_python_files_and_its_shipped_scenario_specs():
    names = [name for name, _ in revision._package_files()]
    assert {"clbench/reproduce.py", "clbench/learners/protonet.py", "scenario_specs/split-digits.toml"} <= set(names)
    assert all(name.endswith(".py") or name.startswith("scenario_specs/") for name in names) and names == sorted(names)
