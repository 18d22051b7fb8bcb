"""Calling a learner: whatever it raises becomes one clear line (`LearnerFailed`), never our traceback."""

from __future__ import annotations

from typing import Any, Callable

from clbench.errors import ClbenchError


class LearnerFailed(ClbenchError):
    """A learner raised inside one of its contract methods."""


def guard(learner: Any, method: str, experience: int, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClbenchError:
        raise
    except Exception as exc:  # a plugin's bug is reported, not shown as our traceback
        raise LearnerFailed(
            f"learner '{learner.name}' raised in {method}() at experience {experience}: {type(exc).__name__}: {exc}"
        ) from exc
