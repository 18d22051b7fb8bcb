"""Every metric against matrices worked out by hand."""

import math

import pytest

from clbench import metrics

# A[i][j]: accuracy on experience j after training through experience i (T = 3)
A = [
    [90.0, 10.0, 5.0],
    [60.0, 80.0, 20.0],
    [50.0, 70.0, 85.0],
]


def test_final_accuracy():
    assert metrics.final_accuracy(A) == pytest.approx((50 + 70 + 85) / 3)


def test_average_incremental_accuracy():
    expected = (90 + (60 + 80) / 2 + (50 + 70 + 85) / 3) / 3
    assert metrics.average_incremental_accuracy(A) == pytest.approx(expected)


def test_forgetting_uses_best_earlier_accuracy():
    # j=0: max(A[0][0], A[1][0]) - A[2][0] = 90 - 50 = 40 ; j=1: max(A[1][1]) - A[2][1] = 80 - 70 = 10
    assert metrics.forgetting(A) == pytest.approx((40 + 10) / 2)
    # the best value may come after the experience itself
    rising = [[40.0, 0.0, 0.0], [70.0, 50.0, 0.0], [20.0, 50.0, 60.0]]
    assert metrics.forgetting(rising) == pytest.approx(((70 - 20) + (50 - 50)) / 2)


def test_backward_transfer():
    # (A[2][0] - A[0][0] + A[2][1] - A[1][1]) / 2 = (-40 - 10) / 2
    assert metrics.backward_transfer(A) == pytest.approx(-25.0)


def test_forward_transfer_against_untrained_accuracy():
    b = [33.0, 12.0, 4.0]
    # (A[0][1] - b[1] + A[1][2] - b[2]) / 2 = (10 - 12 + 20 - 4) / 2
    assert metrics.forward_transfer(A, b) == pytest.approx(7.0)
    assert math.isnan(metrics.forward_transfer(A, None))


def test_single_experience():
    one = [[73.0]]
    assert metrics.final_accuracy(one) == 73.0
    assert metrics.average_incremental_accuracy(one) == 73.0
    for undefined in (metrics.forgetting(one), metrics.backward_transfer(one), metrics.forward_transfer(one, [10.0])):
        assert math.isnan(undefined)


def test_metrics_average_experiences_not_samples():
    """Test sets of unequal size: each experience counts once, whatever its size."""
    # after the last experience: 1 of 1 right on a 1-sample experience, 0 of 99 on a 99-sample one
    a = [[100.0, 0.0], [100.0, 0.0]]
    assert metrics.final_accuracy(a) == 50.0  # not 1 %


def test_summary_has_every_column():
    s = metrics.summary(A, [0, 0, 0])
    assert set(s) == {"final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer", "forward_transfer"}


def test_non_square_matrix_is_rejected():
    with pytest.raises(ValueError):
        metrics.final_accuracy([[1.0, 2.0]])


def test_fewshot_summary():
    acc = [60.0, 80.0, 70.0, 90.0]
    mean, ci = metrics.fewshot_summary(acc)
    std = math.sqrt(sum((a - 75.0) ** 2 for a in acc) / 4)
    assert mean == 75.0 and ci == pytest.approx(1.96 * std / 2)


def test_forgetting_window_stops_before_the_last_row():
    """Accuracy that rises in the last row is negative forgetting: the window is rows j..T-2 only."""
    rises = [[50.0, 0.0, 0.0], [40.0, 60.0, 0.0], [80.0, 70.0, 90.0]]
    # j=0: max(50, 40) - 80 = -30 ; j=1: max(60) - 70 = -10   (a window through row T-1 would give 0 and 0)
    assert metrics.forgetting(rises) == pytest.approx(-20.0)


def test_fscil_summary_by_hand():
    curve = [80.0, 70.0, 60.0]  # pooled accuracy on all seen classes after each session
    last_row = [90.0, 20.0, 50.0]  # base session's classes, then the two novel sessions'
    sizes = [100, 10, 30]  # test samples per session
    s = metrics.fscil_summary(curve, last_row, sizes)
    assert s["fscil_average"] == pytest.approx(70.0)
    assert s["fscil_drop"] == pytest.approx(20.0)  # first minus last: a drop is positive
    assert s["base_accuracy"] == 90.0
    assert s["novel_accuracy"] == pytest.approx((20 * 10 + 50 * 30) / 40)  # 42.5 pooled, not the plain mean 35


def test_fscil_summary_without_novel_sessions():
    s = metrics.fscil_summary([75.0], [75.0], [40])
    assert s["fscil_drop"] == 0.0 and s["base_accuracy"] == 75.0 and math.isnan(s["novel_accuracy"])
