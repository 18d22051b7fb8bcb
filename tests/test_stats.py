"""Statistics over seeds: the Student-t quantile and CI, Welch's and the paired t-test, and ranks
with ties, against values worked out by hand (and t tables)."""

from __future__ import annotations

import math

import pytest

from clbench import stats


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (30, 2.0422725),
                                          (1000, 1.9623391)])
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(df) == pytest.approx(expected, abs=1e-6)


def test_ci95_is_t_times_the_standard_error():
    # 60, 70, 80: s = 10, n = 3 -> 4.3026527 * 10 / sqrt(3) = 24.8414
    assert stats.ci95([60.0, 70.0, 80.0]) == pytest.approx(24.841377, abs=1e-5)
    assert stats.ci95([5.0, 5.0]) == 0.0
    assert math.isnan(stats.ci95([5.0])) and math.isnan(stats.ci95([5.0, float("nan")]))


def test_welch_by_hand():
    # means 2 and 5, variances 1 and 1: se^2 = 1/3 + 1/3, t = 3 / sqrt(2/3) = 3.6742, df = 4 -> p = 0.02131
    assert stats.welch_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.021311, abs=1e-5)
    assert stats.welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0  # no spread, no difference
    assert stats.welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0  # no spread, a difference
    assert math.isnan(stats.welch_p([1.0], [2.0, 3.0]))


def test_paired_by_hand():
    # differences 1, 2, 3: mean 2, s = 1, t = 2 / (1 / sqrt 3) = 3.4641, df = 2 -> p = 0.07418
    assert stats.paired_p([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(0.074180, abs=1e-5)
    assert stats.paired_p([3.0, 5.0], [1.0, 3.0]) == 0.0  # every seed better by exactly 2


def test_shared_seeds_are_compared_in_pairs():
    a, b = {0: 10.0, 1: 20.0, 2: 30.0}, {0: 10.5, 1: 20.5, 2: 30.5}
    assert stats.differ(a, b)  # paired: always 0.5 apart
    assert not stats.differ(a, {5: 10.5, 6: 20.5, 7: 30.5})  # other seeds: Welch sees the spread
    assert not stats.differ({0: 1.0}, {0: 9.0})  # one seed: nothing can be told apart


def test_ranks_tie_results_that_do_not_differ_from_the_best():
    best = {0: 90.0, 1: 91.0, 2: 92.0}
    close = {0: 89.0, 1: 93.0, 2: 90.0}  # differences 1, -2, 2: not significant
    far = {0: 50.0, 1: 51.0, 2: 52.0}
    farther = {0: 10.0, 1: 11.0, 2: 12.0}
    assert stats.rank([far, close, best, farther]) == [(3, False), (1, True), (1, True), (4, False)]
    assert stats.rank([best]) == [(1, False)]
