"""Calling a learner: whatever it raises becomes one clear line (`LearnerFailed`), never our traceback;
scores that cannot be used (wrong shape, NaN or inf) are one clear line too."""

from __future__ import annotations

from typing import Any, Callable

import torch

from clbench.errors import ClbenchError


class LearnerFailed(ClbenchError):
    """A learner raised inside one of its contract methods, or returned unusable scores."""


def guard(learner: Any, method: str, experience: int, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClbenchError:
        raise
    except Exception as exc:  # a plugin's bug is reported, not shown as our traceback
        raise LearnerFailed(f"learner '{learner.name}' raised in {method}() at experience {experience}: "
                            f"{one_line(exc)}") from exc


def one_line(exc: BaseException) -> str:
    """`Type: message` of an exception, its whitespace (newlines, tabs) collapsed into one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def checked_scores(learner: Any, scores: Any, rows: int, num_classes: int) -> torch.Tensor:
    """`scores` from `predict` on `rows` samples, if it is a (rows, num_classes) tensor; else LearnerFailed."""
    if not isinstance(scores, torch.Tensor) or scores.shape != (rows, num_classes):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise LearnerFailed(f"learner '{learner.name}': predict() returned {shape}, expected ({rows}, {num_classes})")
    return scores


def require_finite(learner: Any, finite: torch.Tensor | bool, experience: int) -> None:
    """LearnerFailed unless `finite` (e.g. `torch.isfinite(scores).all()`, checked once per pass: one
    device sync) holds: a NaN or inf score would turn into a leaderboard row that means nothing."""
    if not bool(finite):
        raise LearnerFailed(f"learner '{learner.name}': predict() at experience {experience} returned scores that are "
                            "not finite (NaN or inf); if its training diverged, lower lr or check the loss")
