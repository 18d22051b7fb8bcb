"""Statistics over seeds: Student-t 95% confidence intervals, and the two-sided t-tests that decide
whether two learners' results differ (paired on shared seeds, else Welch's unequal-variance test)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def t_quantile(df: float, probability: float = 1 - ALPHA / 2) -> float:
    """The Student-t quantile with `df` degrees of freedom (0.975 by default: a two-sided 95% interval)."""
    return float(_scipy_stats.t.ppf(probability, df))


def ci95(values: Sequence[float]) -> float:
    """Half-width of the Student-t 95% confidence interval of the mean of `values` (NaNs dropped):
    t(0.975, n - 1) * s / sqrt(n), with s the sample standard deviation; NaN below two values."""
    x = _finite(values)
    if len(x) < 2:
        return math.nan
    return t_quantile(len(x) - 1) * float(np.std(x, ddof=1)) / math.sqrt(len(x))


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def _p_value(mean: float, variance_of_mean: float, df: float) -> float:
    """Two-sided p of a t statistic mean / sqrt(variance_of_mean); a zero variance gives 1 for a
    zero mean (no difference at all) and 0 otherwise (every seed differs by the same amount)."""
    if variance_of_mean == 0:
        return 1.0 if mean == 0 else 0.0
    t = abs(mean) / math.sqrt(variance_of_mean)
    return float(2 * _scipy_stats.t.sf(t, df))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of equal means; NaN when either side has fewer than two values."""
    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    se2 = vx + vy
    df = se2**2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se2 else 1.0
    return _p_value(float(x.mean() - y.mean()), float(se2), df)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (a[i] and b[i] from the same seed); NaN below two pairs."""
    d = _finite(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    if len(d) < 2:
        return math.nan
    return _p_value(float(d.mean()), float(np.var(d, ddof=1) / len(d)), len(d) - 1)


def differ(a: dict[int, float], b: dict[int, float]) -> bool:
    """Whether two results over seeds (seed -> value) differ significantly at the 5% level: the paired
    t-test when both ran the same seeds (at least two), else Welch's test. Too few seeds to test
    (one on either side) is not a significant difference."""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        p = paired_p([a[s] for s in seeds], [b[s] for s in seeds])
    else:
        p = welch_p(list(a.values()), list(b.values()))
    return not math.isnan(p) and p < ALPHA


def rank(results: Sequence[dict[int, float]]) -> list[tuple[int, bool]]:
    """Competition ranks of results over seeds (seed -> value, higher is better), as (rank, tied).
    In order of mean, the best result leads a group of the results after it up to the first one
    significantly different from it (`differ`): all share its rank and are marked tied. The next
    result leads the next group, ranked 1 + the number of results before it."""
    means = [float(np.mean(_finite(list(r.values())))) if len(_finite(list(r.values()))) else math.nan for r in results]
    order = sorted(range(len(results)), key=lambda i: (math.isnan(means[i]), -means[i]))
    ranks: list[tuple[int, bool]] = [(0, False)] * len(results)
    position = 0
    while position < len(order):
        leader = order[position]
        group = [leader]
        for other in order[position + 1:]:
            if differ(results[leader], results[other]):
                break
            group.append(other)
        for i in group:
            ranks[i] = (position + 1, len(group) > 1)
        position += len(group)
    return ranks
