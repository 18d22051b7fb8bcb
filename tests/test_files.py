"""AtomicFile: the target is replaced whole or not at all."""

from __future__ import annotations

import pytest

from clbench.files import AtomicFile


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
