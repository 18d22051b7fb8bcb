"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_data_root(tmp_path_factory, monkeypatch):
    """Every test gets its own data root, so nothing is written under the user's ~/.cache."""
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path_factory.mktemp("data-root")))
    monkeypatch.delenv("CLBENCH_LEADERBOARD", raising=False)


@pytest.fixture
def leaderboard_path(tmp_path):
    return tmp_path / "board" / "leaderboard.csv"


@pytest.fixture
def single_thread():
    """Tiny tensors: one thread is faster than a pool, and immune to a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
