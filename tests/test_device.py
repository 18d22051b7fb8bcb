"""The suite runs where CLBENCH_TEST_DEVICE says (tests/conftest.py): "auto" is that device."""

from __future__ import annotations

import os

from clbench.device import resolve_device


def test_auto_is_the_test_device():
    assert resolve_device("auto").type == os.environ.get("CLBENCH_TEST_DEVICE", "cpu")
