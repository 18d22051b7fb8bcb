"""Statistics over seeds: Student-t 95% confidence intervals; the two-sided tests that compare a
result with the best of its table (the paired t-test when both ran the same seeds, else Welch's
unequal-variance t-test; for few-shot episodes with too few seeds, a z-test of the two mean episode
accuracies); Holm's correction over a table's comparisons with its best; and the ranks they give."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

ALPHA = 0.05
"""Significance level of every test (two-sided), after Holm's correction; CIs are 1 - ALPHA = 95%."""

PAIRED, WELCH, EPISODE_Z = "paired t", "Welch t", "z on episodes"
TESTS = (PAIRED, WELCH, EPISODE_Z)
"""The tests `compare` may use, by the name the tables print."""

Seeds = Mapping[int, float]
"""A result over seeds: seed -> value (NaN values are dropped)."""


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


def _constant(x: np.ndarray) -> bool:
    """Whether every value is the same (compared exactly: a mean of equal floats may not be exact)."""
    return bool(np.all(x == x[0]))


def _p_of_constants(difference: float) -> float:
    """No spread at all: equal constants are tied (p = 1), different constants differ (p = 0)."""
    return 1.0 if difference == 0 else 0.0


def _t_p(mean: float, variance_of_mean: float, df: float) -> float:
    """Two-sided p of the t statistic mean / sqrt(variance_of_mean) (a positive variance)."""
    return float(2 * _scipy_stats.t.sf(abs(mean) / math.sqrt(variance_of_mean), df))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of equal means; NaN when either side has fewer than two
    values. Both sides constant: 1 if the two constants are equal, else 0."""
    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    if _constant(x) and _constant(y):
        return _p_of_constants(x[0] - y[0])
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return _t_p(float(x.mean() - y.mean()), float(vx + vy), df)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (a[i] and b[i] from the same seed); NaN below two
    pairs. The same difference on every seed: 1 if it is zero, else 0."""
    d = _finite(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    if len(d) < 2:
        return math.nan
    if _constant(d):
        return _p_of_constants(d[0])
    return _t_p(float(d.mean()), float(np.var(d, ddof=1) / len(d)), len(d) - 1)


def episode_z_p(mean_a: float, se_a: float, mean_b: float, se_b: float) -> float:
    """Two-sided p-value of the z-test of two mean episode accuracies with standard errors `se_a`
    and `se_b` (a run's 95% episode CI / 1.96; episodes are independent draws); NaN if any is
    missing. Both errors zero: 1 for equal means, else 0."""
    if any(math.isnan(v) for v in (mean_a, se_a, mean_b, se_b)):
        return math.nan
    se = math.hypot(se_a, se_b)
    if se == 0:
        return _p_of_constants(mean_a - mean_b)
    return float(2 * _scipy_stats.norm.sf(abs(mean_a - mean_b) / se))


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two results: the raw two-sided p-value and the test that gave it
    (NaN and "untested" when the results are too small to test)."""

    p: float
    test: str


UNTESTED = Comparison(math.nan, "untested")


def compare(a: Seeds, b: Seeds, episodes_a: tuple[float, float] | None = None,
            episodes_b: tuple[float, float] | None = None) -> Comparison:
    """Compare two results over seeds: with at least two seeds each, the paired t-test when both
    ran the same seeds, else Welch's; otherwise, when both give (mean episode accuracy, its
    standard error), the z-test of `episode_z_p`; otherwise untested."""
    a, b = _clean(a), _clean(b)
    if len(a) >= 2 and len(b) >= 2:
        if set(a) == set(b):
            seeds = sorted(a)
            return Comparison(paired_p([a[s] for s in seeds], [b[s] for s in seeds]), PAIRED)
        return Comparison(welch_p(list(a.values()), list(b.values())), WELCH)
    if episodes_a is not None and episodes_b is not None:
        p = episode_z_p(*episodes_a, *episodes_b)
        return UNTESTED if math.isnan(p) else Comparison(p, EPISODE_Z)
    return UNTESTED


def _clean(result: Seeds) -> dict[int, float]:
    return {seed: float(value) for seed, value in result.items() if not math.isnan(value)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: with the m finite p-values sorted p(1) <= ... <= p(m),
    p(k) becomes max over j <= k of min(1, (m - j + 1) p(j)). NaN entries (untested) stay NaN and
    do not count in m."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - k) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Placement:
    """Where a result ranks in its table: its competition `rank`; `tied`: not significantly below
    the best (shown `=1`; the best itself when some other row is); `p`: the Holm-adjusted p-value
    of its comparison with the best and `test` the test used (NaN and "" for the best itself; NaN
    and "untested" for a row that could not be tested)."""

    rank: int
    tied: bool
    p: float
    test: str


def rank(results: Sequence[Seeds], episodes: Sequence[tuple[float, float] | None] | None = None) -> list[Placement]:
    """Rank results over seeds (higher is better) against the best, the one with the highest mean:
    every other result is compared with it (`compare`; `episodes[i]`: result i's (mean episode
    accuracy, standard error), for few-shot rows) and the p-values are Holm-corrected together. A
    result whose adjusted p is >= `ALPHA` is tied with the best: rank 1, `tied` (it may be first). Every
    other result (significantly below the best, or untested: fewer than two seeds and no episode test)
    keeps its competition rank by mean among all results (1 + the number with a higher mean): that
    rank claims only that so many results have a higher mean, never that the result is worse than a
    tied one with a lower mean, which no test compared. A result whose mean equals the best's is
    placed with it even when untested."""
    if not results:
        return []
    episodes = list(episodes) if episodes is not None else [None] * len(results)
    means = [float(np.mean(list(r.values()))) if r else math.nan for r in map(_clean, results)]

    def by_mean(i: int) -> tuple[bool, float]:
        return (math.isnan(means[i]), 0.0 if math.isnan(means[i]) else -means[i])

    best = min(range(len(results)), key=by_mean)
    comparisons = [Comparison(math.nan, "") if i == best else compare(results[best], results[i], episodes[best], episodes[i])
                   for i in range(len(results))]
    adjusted = holm([c.p for c in comparisons])
    tied = [not math.isnan(p) and p >= ALPHA for p in adjusted]
    leading = [i == best or tied[i] or means[i] == means[best] for i in range(len(results))]
    order = [by_mean(i) for i in range(len(results))]
    return [Placement(1 if leading[i] else 1 + sum(other < order[i] for other in order),
                      tied[i] or (i == best and any(tied)), adjusted[i], comparisons[i].test)
            for i in range(len(results))]
