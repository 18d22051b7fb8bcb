"""Statistics over seeds: the Student-t quantile and CI, Welch's and the paired t-test, the episode
z-test, Holm's correction, and ranks against the best, against values worked out by hand (and t
tables). With 2 degrees of freedom the two-sided p of t is 1 - t / sqrt(t^2 + 2), which the hand
values below use."""

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
    assert math.isnan(stats.welch_p([1.0], [2.0, 3.0]))


def test_paired_by_hand():
    # differences 1, 2, 3: mean 2, s = 1, t = 2 / (1 / sqrt 3) = 3.4641, df = 2 -> p = 1 - t / sqrt(14) = 0.07418
    assert stats.paired_p([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(0.074180, abs=1e-5)
    assert math.isnan(stats.paired_p([2.0], [1.0]))


def test_no_spread_equal_constants_are_tied_and_different_constants_differ():
    # 0.1 three times and twice: float means that differ in the last bit, and a variance of ~1e-33,
    # gave p = 0.29 before; equal constants are now tied explicitly
    assert stats.welch_p([0.1, 0.1, 0.1], [0.1, 0.1]) == 1.0
    assert stats.welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert stats.paired_p([3.0, 5.0], [3.0, 5.0]) == 1.0  # the same value on every seed
    assert stats.paired_p([3.0, 5.0], [1.0, 3.0]) == 0.0  # every seed better by exactly 2
    assert stats.episode_z_p(60.0, 0.0, 60.0, 0.0) == 1.0 and stats.episode_z_p(60.0, 0.0, 59.0, 0.0) == 0.0
    ranks = stats.rank([{0: 90.0, 1: 90.0, 2: 90.0}, {0: 90.0, 1: 90.0, 2: 90.0}, {0: 80.0, 1: 80.0, 2: 80.0}])
    assert [(p.rank, p.tied, p.test) for p in ranks] == [(1, True, ""), (1, True, stats.PAIRED), (3, False, stats.PAIRED)]
    assert ranks[1].p == 1.0 and ranks[2].p == 0.0


def test_episode_z_by_hand():
    # 52 and 50 with standard errors 1 and 1: z = 2 / sqrt 2 = 1.41421 -> p = 2 (1 - Phi(1.41421)) = 0.157299
    assert stats.episode_z_p(52.0, 1.0, 50.0, 1.0) == pytest.approx(0.157299, abs=1e-6)
    assert math.isnan(stats.episode_z_p(52.0, math.nan, 50.0, 1.0))


def test_compare_picks_paired_welch_episodes_or_nothing():
    a = {0: 10.0, 1: 20.0, 2: 30.0}
    paired = stats.compare(a, {0: 10.5, 1: 20.5, 2: 30.5})
    assert paired == stats.Comparison(0.0, stats.PAIRED)  # always 0.5 apart
    welch = stats.compare(a, {5: 10.5, 6: 20.5, 7: 30.5})
    assert welch.test == stats.WELCH and welch.p > 0.9  # other seeds: Welch sees the spread
    assert stats.compare({0: 1.0}, {0: 9.0}) == stats.UNTESTED  # one seed: nothing can be told apart
    assert stats.compare({0: 52.0}, {0: 50.0}, (52.0, 1.0), (50.0, 1.0)).test == stats.EPISODE_Z
    assert stats.compare({0: 1.0, 1: float("nan")}, a) == stats.UNTESTED  # a NaN seed does not count


def test_holm_by_hand():
    # m = 3 tested: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 (step-down is monotone)
    adjusted = stats.holm([0.04, 0.01, math.nan, 0.03])
    assert adjusted[:2] == pytest.approx([0.06, 0.03]) and math.isnan(adjusted[2]) and adjusted[3] == pytest.approx(0.06)
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0] and stats.holm([]) == []  # 0.8 * 2 capped at 1


def test_every_row_is_compared_with_the_best_not_only_the_next():
    """The old rule stopped at the first significant difference: a row tied with the best but
    listed after a row that is not was left out of the best's group."""
    best = {0: 90.0, 1: 91.0, 2: 92.0}
    apart = {0: 85.0, 1: 86.0, 2: 87.5}  # d = 5, 5, 4.5: t = 29.0, p = 1 - 29 / sqrt(843) = 0.001187
    noisy = {0: 70.0, 1: 95.0, 2: 80.0}  # d = 20, -4, 12: t = 1.32288, p = 1 - t / sqrt(t^2 + 2) = 0.316870
    apart_place, best_place, noisy_place = stats.rank([apart, best, noisy])
    assert (best_place.rank, best_place.tied, best_place.test) == (1, True, "")
    assert (noisy_place.rank, noisy_place.tied) == (1, True) and noisy_place.p == pytest.approx(0.316870, abs=1e-6)
    # below the best: its rank by mean (2nd), not after the tied `noisy`, whose lower mean no test compared with it
    assert (apart_place.rank, apart_place.tied) == (2, False)
    assert apart_place.p == pytest.approx(2 * 0.0011869, abs=1e-6)  # Holm: the smaller of 2 p-values, times 2


def test_holm_correction_decides_the_ties():
    """Raw p 0.0351 and 0.0374 are both below 0.05; Holm over the 2 comparisons makes both 0.0702."""
    best = {0: 50.0, 1: 60.0, 2: 70.0}
    first = {0: 48.0, 1: 57.0, 2: 66.0}  # d = 2, 3, 4: t = 3 sqrt 3 = 5.19615, p = 1 - t / sqrt(29) = 0.035099
    second = {0: 48.1, 1: 57.1, 2: 66.1}  # d = 1.9, 2.9, 3.9: t = 2.9 sqrt 3 = 5.02295, p = 0.037424
    assert stats.compare(best, first).p == pytest.approx(0.035099, abs=1e-6)
    assert stats.compare(best, second).p == pytest.approx(0.037424, abs=1e-6)
    places = stats.rank([first, best, second])
    assert [(p.rank, p.tied) for p in places] == [(1, True), (1, True), (1, True)]
    assert places[0].p == places[2].p == pytest.approx(2 * 0.035099, abs=1e-5)


def test_one_seed_claims_no_tie():
    """A best with one seed made every row `=1` (finetune 56.21 'tied' with joint 100.00)."""
    places = stats.rank([{0: 56.21}, {0: 100.0}, {0: 80.0}])
    assert [(p.rank, p.tied, p.test) for p in places] == [(3, False, "untested"), (1, False, ""), (2, False, "untested")]
    assert all(math.isnan(p.p) for p in places)
    assert [(p.rank, p.tied) for p in stats.rank([{0: 70.0}, {0: 70.0}])] == [(1, False), (1, False)]  # equal means


def test_rows_not_tied_with_the_best_keep_their_rank_by_mean():
    best = {0: 90.0, 1: 91.0, 2: 92.0}
    close = {0: 89.0, 1: 93.0, 2: 90.0}  # d = 1, -2, 2: not significant
    single = {0: 90.9}  # one seed: a higher mean than `close`, but no test can tie it with the best
    far = {0: 50.0, 1: 51.0, 2: 52.0}
    places = stats.rank([far, single, close, best])
    assert [(p.rank, p.tied) for p in places] == [(4, False), (2, False), (1, True), (1, True)]
    assert places[1].test == "untested" and math.isnan(places[1].p)
    [alone] = stats.rank([best])
    assert (alone.rank, alone.tied, alone.test) == (1, False, "") and math.isnan(alone.p)
    assert stats.rank([]) == []


def test_few_shot_rows_with_one_seed_use_their_episode_ci():
    results = [{0: 60.0}, {0: 58.0}, {0: 50.0}]
    episodes = [(60.0, 1.0), (58.0, 1.0), (50.0, 1.0)]  # 60 vs 58: p = 0.157; 60 vs 50: z = 7.07, p ~ 1.5e-12
    places = stats.rank(results, episodes)
    assert [(p.rank, p.tied, p.test) for p in places] == [(1, True, ""), (1, True, stats.EPISODE_Z),
                                                          (3, False, stats.EPISODE_Z)]
    assert places[1].p == pytest.approx(0.157299, abs=1e-6)  # Holm: the larger p times 1
