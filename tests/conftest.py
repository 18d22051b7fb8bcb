"""Shared fixtures, and the device the suite runs on."""

import os

import pytest
import torch

TEST_DEVICE = os.environ.get("CLBENCH_TEST_DEVICE", "cpu")
"""What device "auto" is in the suite (every run that names no device): "cpu", the default, hides any GPU
from torch (set before CUDA starts), so that the suite computes the same numbers on every machine;
"cuda" leaves the GPU visible, so those runs (in bf16: precision auto) exercise it. Tests that name
"cpu" themselves stay there."""
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_configure(config: pytest.Config) -> None:
    if TEST_DEVICE not in ("cpu", "cuda"):
        raise pytest.UsageError(f"CLBENCH_TEST_DEVICE={TEST_DEVICE}: give cpu (the default) or cuda")
    if TEST_DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("CLBENCH_TEST_DEVICE=cuda, but torch sees no CUDA device")


@pytest.fixture(autouse=True)
def isolated_data_root(tmp_path_factory, monkeypatch):
    """Every test gets its own data root, so nothing is written under the user's ~/.cache."""
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path_factory.mktemp("data-root")))
    monkeypatch.delenv("CLBENCH_LEADERBOARD", raising=False)


@pytest.fixture
def leaderboard_path(tmp_path):
    return tmp_path / "board" / "leaderboard.csv"


@pytest.fixture(autouse=True)
def restore_torch():
    """Runs set torch's thread count and deterministic flag for the process: put them back after each test."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def single_thread():
    """Tiny tensors: one thread is faster than a pool, and immune to a busy machine's cores (`restore_torch`
    puts the count back)."""
    torch.set_num_threads(1)
