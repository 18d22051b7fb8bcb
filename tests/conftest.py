"""Shared fixtures."""

import pytest


@pytest.fixture(autouse=True)
def isolated_data_root(tmp_path_factory, monkeypatch):
    """Every test gets its own data root, so nothing is written under the user's ~/.cache."""
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path_factory.mktemp("data-root")))
    monkeypatch.delenv("CLBENCH_LEADERBOARD", raising=False)


@pytest.fixture
def leaderboard_path(tmp_path):
    return tmp_path / "board" / "leaderboard.csv"
