"""Pure functions of the accuracy matrix A (percent), A[i][j] = accuracy on experience j's test
data after training through experience i. Undefined values (e.g. forgetting with one
experience) are NaN, never a made-up zero."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray


def _square(a: Matrix) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.size == 0:
        raise ValueError(f"accuracy matrix must be square T x T with T >= 1, got shape {a.shape}")
    return a


def final_accuracy(a: Matrix) -> float:
    """Mean over j of A[T-1][j]."""
    return float(_square(a)[-1].mean())


def average_incremental_accuracy(a: Matrix) -> float:
    """Mean over i of (mean over j <= i of A[i][j])."""
    a = _square(a)
    return float(np.mean([a[i, : i + 1].mean() for i in range(len(a))]))


def forgetting(a: Matrix) -> float:
    """Chaudhry et al. 2018: mean over j < T-1 of (max over l in j..T-2 of A[l][j]) - A[T-1][j]."""
    a = _square(a)
    t = len(a)
    if t < 2:
        return math.nan
    return float(np.mean([a[j : t - 1, j].max() - a[t - 1, j] for j in range(t - 1)]))


def backward_transfer(a: Matrix) -> float:
    """Lopez-Paz & Ranzato 2017: mean over j < T-1 of A[T-1][j] - A[j][j]."""
    a = _square(a)
    t = len(a)
    if t < 2:
        return math.nan
    return float(np.mean([a[t - 1, j] - a[j, j] for j in range(t - 1)]))


def forward_transfer(a: Matrix, untrained: Sequence[float] | None) -> float:
    """Mean over j > 0 of A[j-1][j] - b[j], b[j] the untrained learner's accuracy on experience j."""
    a = _square(a)
    t = len(a)
    if untrained is None or t < 2:
        return math.nan
    b = np.asarray(untrained, dtype=float)
    return float(np.mean([a[j - 1, j] - b[j] for j in range(1, t)]))


EPISODE_Z95 = 1.96
"""The normal quantile of the few-shot episode CI: a run's standard error is `fewshot_ci95 / EPISODE_Z95`."""


def fewshot_summary(episode_accuracies: Sequence[float]) -> tuple[float, float]:
    """Mean episode accuracy and its 95% confidence half-width, EPISODE_Z95 * std / sqrt(n)."""
    acc = np.asarray(episode_accuracies, dtype=float)
    if acc.size == 0:
        return math.nan, math.nan
    return float(acc.mean()), float(EPISODE_Z95 * acc.std() / math.sqrt(acc.size))


def fscil_summary(curve: Sequence[float], last_row: Sequence[float], test_sizes: Sequence[int]) -> dict[str, float]:
    """Few-shot class-incremental figures: the average of the per-session accuracy on all seen
    classes (`curve`), its drop from the first session to the last, and at the end the accuracy on
    the base session's classes (`last_row[0]`) and on all novel classes pooled (sessions 1.., weighted
    by their test sizes)."""
    novel = np.asarray(last_row[1:], dtype=float)
    sizes = np.asarray(test_sizes[1:], dtype=float)
    return {
        "fscil_average": float(np.mean(curve)),
        "fscil_drop": float(curve[0] - curve[-1]),
        "base_accuracy": float(last_row[0]),
        "novel_accuracy": float((novel * sizes).sum() / sizes.sum()) if sizes.sum() else math.nan,
    }


def summary(a: Matrix, untrained: Sequence[float] | None = None) -> dict[str, float]:
    """Every accuracy-matrix metric of a run, by leaderboard column name."""
    return {
        "final_accuracy": final_accuracy(a),
        "average_incremental_accuracy": average_incremental_accuracy(a),
        "forgetting": forgetting(a),
        "backward_transfer": backward_transfer(a),
        "forward_transfer": forward_transfer(a, untrained),
    }
