"""The replay buffer shared by ER, ER-ACE, DER++ and AdaB²N (clbench.learners.buffer): exact reservoir
sampling, uint8 image storage, logits kept at insertion, and its state."""

from __future__ import annotations

import pytest
import torch

from clbench.augment import ImageTransform
from clbench.errors import ClbenchError
from clbench.learners.buffer import ImageCodec, ReservoirBuffer, reservoir_writes

CPU = torch.device("cpu")


# ---- the reservoir policy ----------------------------------------------------------------------------
def _sequential_algorithm_r(buffer: list[int], seen: int, batch: list[int], size: int, g: torch.Generator) -> None:
    """Algorithm R one sample at a time, with the draws `reservoir_writes` documents."""
    draws = torch.randint(0, 2**62, (len(batch),), generator=g).tolist()
    for k, sample in enumerate(batch):
        n = seen + k + 1
        if n <= size:
            buffer[n - 1] = sample
        elif draws[k] % n < size:
            buffer[draws[k] % n] = sample


@pytest.mark.parametrize("size,batches", [
    (10, [25, 1, 7, 30, 37]),  # the first batch straddles the moment the buffer fills
    (3, [64, 64, 64]),  # many collisions inside each batch
    (50, [8, 8, 8]),  # never fills
    (1, [1, 5, 1, 9]),
])
def test_vectorised_reservoir_is_sequential_algorithm_r_draw_for_draw(size, batches):
    for seed in range(40):
        g_vec, g_seq = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        vec, seq, seen = [-1] * size, [-1] * size, 0
        for b in batches:
            slots, sources = reservoir_writes(seen, b, size, g_vec)
            assert len(set(slots.tolist())) == len(slots), "slots written twice in one batch"
            for slot, source in zip(slots.tolist(), sources.tolist()):
                vec[slot] = seen + source
            _sequential_algorithm_r(seq, seen, list(range(seen, seen + b)), size, g_seq)
            seen += b
            assert vec == seq


def test_each_stream_position_is_retained_with_probability_size_over_n():
    size, batches, trials = 10, [25, 1, 7, 30, 37], 4000  # n = 100: each position kept with p = 0.1
    n = sum(batches)
    kept = torch.zeros(n)
    g = torch.Generator().manual_seed(2024)  # fixed: the test is deterministic
    for _ in range(trials):
        buffer, seen = torch.full((size,), -1), 0
        for b in batches:
            slots, sources = reservoir_writes(seen, b, size, g)
            buffer[slots] = seen + sources
            seen += b
        assert len(buffer.unique()) == size and buffer.min() >= 0
        kept[buffer] += 1
    frequency = kept / trials
    # binomial(4000, 0.1): standard deviation 0.0047; 0.025 is more than 5 of them
    assert (frequency - size / n).abs().max() < 0.025, frequency
    # positions of the straddling first batch and of the last batch are not favoured over each other
    assert abs(frequency[:25].mean() - frequency[-37:].mean()) < 0.01


def test_the_buffer_keeps_each_seen_item_with_probability_size_over_seen():
    size, batches, trials = 8, [3, 10, 1, 26], 3000  # 40 seen: each kept with p = 0.2
    kept = torch.zeros(sum(batches))
    for trial in range(trials):
        buffer = ReservoirBuffer(size, CPU, seed=trial)  # fixed seeds: the test is deterministic
        seen = 0
        for b in batches:
            ids = torch.arange(seen, seen + b)
            buffer.add(ids.float().view(-1, 1), ids)
            seen += b
        assert buffer.filled == size and len(buffer.y.unique()) == size
        assert torch.equal(buffer.x.view(-1).long(), buffer.y)  # inputs stay with their labels
        kept[buffer.y] += 1
    # binomial(3000, 0.2): standard deviation 0.0073; 0.035 is more than 4.5 of them
    assert (kept / trials - size / sum(batches)).abs().max() < 0.035


def test_images_are_stored_once_as_uint8_and_replayed_exactly_as_the_runner_normalises_them():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.randint(0, 256, (30, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = ImageTransform(0, mean, std)(pixels)
    codec = ImageCodec(mean, std, CPU)
    assert torch.equal(codec.encode(x), pixels)
    buffer = ReservoirBuffer(50, CPU, seed=0, codec=codec)
    buffer.add(x, torch.arange(30))
    assert buffer.x.dtype == torch.uint8 and torch.equal(buffer.x[:30], pixels)
    replayed, labels, logits = buffer.sample(30)
    assert logits is None and torch.equal(replayed, x[labels])


def test_logits_are_kept_with_their_samples_and_state_round_trips():
    buffer = ReservoirBuffer(5, CPU, seed=3, keeps_logits=True)
    for step in range(4):
        ids = torch.arange(3 * step, 3 * step + 3)
        buffer.add(ids.float().view(-1, 1), ids, ids.float().view(-1, 1).expand(-1, 4) * 10)
    assert torch.equal(buffer.logits, buffer.y.float().view(-1, 1).expand(-1, 4) * 10)
    copy = ReservoirBuffer(5, CPU, seed=99, keeps_logits=True)
    copy.load(buffer.state(), "test")
    assert torch.equal(copy.sample(4)[1], buffer.sample(4)[1])  # the same draws: the generator came along
    with pytest.raises(ClbenchError, match="buffer_size=6 implies 6"):
        ReservoirBuffer(6, CPU, seed=0, keeps_logits=True).load(buffer.state(), "test")
    with pytest.raises(ClbenchError, match="has logits"):
        ReservoirBuffer(5, CPU, seed=0).load(buffer.state(), "test")


def test_sampling_never_draws_more_than_held_nor_repeats():
    buffer = ReservoirBuffer(10, CPU, seed=0)
    assert buffer.sample(4) is None
    buffer.add(torch.zeros(3, 1), torch.arange(3))
    _, labels, _ = buffer.sample(8)
    assert sorted(labels.tolist()) == [0, 1, 2]
