"""clbench: one standardized benchmark for continual and few-shot learning in PyTorch."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Context", "ExperienceInfo", "Learner", "Range", "Step", "__version__"]


def __getattr__(name: str) -> Any:  # lazy, so `clbench --help` does not wait for torch
    if name in ("Context", "ExperienceInfo", "Learner", "Range", "Step"):
        from clbench import learner

        return getattr(learner, name)
    raise AttributeError(f"module 'clbench' has no attribute {name!r}")
