"""Where Avalanche and clbench define a metric differently."""

from __future__ import annotations

import math

import numpy as np

from clbench.metrics import Matrix, _square


def avalanche_forgetting(a: Matrix) -> float:
    """Forgetting as Avalanche's `StreamForgetting` reports it when each evaluation covers the experiences
    trained so far: the accuracy right after training on an experience minus the last one, mean over
    j < T-1 of A[j][j] - A[T-1][j] (first minus last). clbench's `metrics.forgetting` (Chaudhry et al.
    2018) takes the best earlier accuracy instead, max over l in j..T-2 of A[l][j], minus the last; the
    two agree for T = 2 and whenever no accuracy rises above its first value. NaN for T < 2."""
    a = _square(a)
    t = len(a)
    if t < 2:
        return math.nan
    return float(np.mean([a[j, j] - a[t - 1, j] for j in range(t - 1)]))
