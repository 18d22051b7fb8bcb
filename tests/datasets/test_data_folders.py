"""The data root is checked before anything runs, and `clbench data --prepare` reports what it could not do."""

from __future__ import annotations

import pytest

from clbench.cli import main
from clbench.datasets import load_dataset, resolve_data_root, status
from clbench.errors import ClbenchError


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    return path


def test_resolve_data_root_refuses_a_file_from_flag_or_environment(a_file, monkeypatch):
    with pytest.raises(ClbenchError, match=r"^--data-root .*not-a-folder is a file, not a folder"):
        resolve_data_root(a_file)
    monkeypatch.setenv("CLBENCH_DATA", str(a_file))
    with pytest.raises(ClbenchError, match=r"^\$CLBENCH_DATA .*not-a-folder is a file"):
        resolve_data_root()
    with pytest.raises(ClbenchError, match="is a file"):
        load_dataset("digits")  # even a dataset that reads nothing from the root


def test_resolve_data_root_accepts_a_folder_yet_to_be_made(tmp_path, monkeypatch):
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    assert resolve_data_root(tmp_path / "later") == tmp_path / "later"
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path


@pytest.mark.parametrize("command", [["data"], ["data", "--prepare"], ["run", "--no-progress"]])
def test_cli_with_a_file_as_data_root_is_one_line_and_writes_nothing(a_file, tmp_path, capsys, command):
    board = tmp_path / "board.csv"
    code = main([*command, "--data-root", str(a_file), *(["--leaderboard", str(board)] if "run" in command else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a file, not a folder" in err
    assert not board.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


def test_preparing_an_absent_dataset_is_a_failure(tmp_path):
    entries = status.prepare(tmp_path, ["cifar100"])
    assert [e["state"] for e in entries] == ["missing"] and "cifar-100-python" in entries[0]["detail"]
    assert status.failed(entries, required=True) == entries  # asked for by name: the command must fail
    assert status.failed(entries) == []  # a plain report of what is there: missing is no failure


def test_a_corrupt_dataset_is_always_a_failure(tmp_path, fmt):
    fmt.write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"garbage")
    entries = status.report(tmp_path, ["cifar100"])
    assert entries[0]["state"] == "corrupt" and status.failed(entries) == entries
