"""The benchmarks' shared measurement helpers (benchmarks/_common.py): medians, spreads, the load mark,
interleaving, and the equal-arithmetic encoder handed to peer libraries."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _common  # noqa: E402
from _common import AsClbenchRunsIt, Measurement, interleaved, marked  # noqa: E402


@pytest.fixture
def two_threads(monkeypatch):
    """A machine of 4 cores on which this process computes with 2 threads: the load limit is 2."""
    monkeypatch.setattr(_common.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(_common.torch, "get_num_threads", lambda: 2)


def loads(monkeypatch, values):
    """Make os.getloadavg return the given 1-minute loads, one per call."""
    it = iter(values)
    monkeypatch.setattr(_common.os, "getloadavg", lambda: (next(it), 0.0, 0.0))


def recorded(seconds, load_pairs, monkeypatch, label="m"):
    loads(monkeypatch, [x for pair in load_pairs for x in pair])
    m = Measurement(label)
    for s in seconds:
        m.record(lambda s=s: (s, s * 10))
    return m


def test_median_spread_and_median_result(two_threads, monkeypatch):
    m = recorded([3.0, 1.0, 2.0], [(0.5, 0.5)] * 3, monkeypatch)
    assert m.median == 2.0
    assert m.spread == pytest.approx((3.0 - 1.0) / 2.0)
    assert m.median_result == 20.0  # the result of the repeat that took the median time
    assert m.cell() == "2.00 [100%]"
    assert m.cell(lambda s: 100 / s, 1) == "50.0 [100%]"  # a rate: 100 samples in the median seconds


def test_median_of_an_even_count_is_a_repeats_own(two_threads, monkeypatch):
    m = recorded([4.0, 1.0, 3.0, 2.0], [(0.5, 0.5)] * 4, monkeypatch)
    assert m.median == 2.0  # the lower middle one, not 2.5: the figure and its result come from one repeat
    assert m.median_result == 20.0


def test_under_load_when_the_one_minute_load_exceeds_the_threads(two_threads, monkeypatch):
    quiet = recorded([1.0, 1.0], [(1.9, 2.0), (2.0, 1.5)], monkeypatch)
    assert not quiet.under_load  # 2.0 is what this process's 2 threads alone explain
    busy = recorded([1.0, 1.0], [(1.0, 1.0), (1.2, 2.1)], monkeypatch)  # after the second repeat: 2.1 > 2
    assert busy.under_load
    assert busy.cell() == "1.00 [0%] under load"
    assert marked("3.0x", quiet) == "3.0x"
    assert marked("3.0x", quiet, busy) == "3.0x under load"  # a ratio is under load if either side was


def test_load_limit_is_at_most_the_cores(monkeypatch):
    monkeypatch.setattr(_common.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(_common.torch, "get_num_threads", lambda: 8)
    assert _common.load_limit() == 2


def test_interleaved_rotates_the_order_each_round(monkeypatch):
    monkeypatch.setattr(_common.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    order = []
    jobs = [(Measurement(name), lambda name=name: (order.append(name) or 1.0, None)) for name in "abc"]
    interleaved(jobs, 4, None)
    assert "".join(order) == "abc" + "bca" + "cab" + "abc"
    assert [len(m.seconds) for m, _ in jobs] == [4, 4, 4]


def test_take_times_the_whole_call(monkeypatch):
    monkeypatch.setattr(_common.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(_common.time, "perf_counter", lambda: next(clock))
    m = Measurement("m")
    assert m.take(lambda: "out", torch.device("cpu")) == "out"
    assert m.seconds == [2.5]


def test_equal_arithmetic_encoder_gives_the_encoders_outputs(single_thread):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder[1].running_mean.uniform_(-1, 1)
    encoder[1].running_var.uniform_(0.5, 2)
    encoder.eval()
    x = torch.randn(5, 3, 8, 8)
    folded = AsClbenchRunsIt(encoder)
    assert isinstance(folded.model[1], nn.Identity)  # the batch norm was folded into the convolution
    assert torch.allclose(folded(x), encoder(x), atol=1e-5)
    assert folded(x).dtype == torch.float32
