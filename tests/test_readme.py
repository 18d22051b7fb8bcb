"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    section = README.read_text().split("## Writing your own learner", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_conformance_example_runs_under_pytest_as_written(tmp_path):
    blocks = _python_blocks()
    plugin = blocks[0]
    [example] = [b for b in blocks if "learner_checks" in b]
    (tmp_path / "my_learner.py").write_text(plugin)
    (tmp_path / "test_my_learner.py").write_text(example)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_learner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"\d+ passed", done.stdout) and "failed" not in done.stdout
