"""Shared fixtures."""

import pytest


@pytest.fixture
def leaderboard_path(tmp_path):
    return tmp_path / "board" / "leaderboard.csv"
