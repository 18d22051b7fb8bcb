"""The `replay` learner (Experience Replay with a reservoir buffer): the reservoir policy, the replay
step, forgetting on split-digits, exact resume, and the conformance suite."""

from __future__ import annotations

import io

import pytest
import torch

from clbench import runner
from clbench.backbones import backbone_factory
from clbench.errors import ClbenchError
from clbench.learner import Context, get_learner
from clbench.learners.finetune import Finetune
from clbench.learners.replay import Replay, reservoir_writes
from clbench.metrics import summary
from clbench.scenario import build_scenario, load_spec
from clbench.testing import check_learner

SHAPE = (1, 2, 2)


pytestmark = pytest.mark.usefixtures("single_thread")


def _context(seed: int = 0, num_classes: int = 4) -> Context:
    return Context(torch.device("cpu"), num_classes=num_classes, input_shape=SHAPE, seed=seed,
                   backbone=backbone_factory("mlp", SHAPE))


def _ids(first: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples numbered first .. first + n - 1: every pixel holds the number (exact in float32)."""
    ids = torch.arange(first, first + n, dtype=torch.float32)
    return ids.view(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous(), torch.arange(first, first + n) % 4


def _stored_ids(learner: Replay) -> list[int]:
    return learner.buffer_x[: learner.filled, 0, 0, 0].long().tolist()


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


def test_buffer_holds_exactly_the_samples_seen_until_full_then_a_subset_never_larger():
    learner = Replay(_context(), buffer_size=20)
    seen = 0
    for b in (3, 8, 1, 16, 5, 40, 2):
        learner.learn(*_ids(seen, b), None)
        seen += b
        assert learner.buffer_x.shape[0] == learner.buffer_y.shape[0] == 20
        assert learner.seen == seen and learner.filled == min(seen, 20)
        stored = _stored_ids(learner)
        if seen <= 20:
            assert stored == list(range(seen))  # in arrival order
        else:
            assert len(set(stored)) == 20 and all(0 <= s < seen for s in stored)
        assert learner.buffer_y[: learner.filled].tolist() == [s % 4 for s in stored]  # labels stay with inputs


# ---- the replay step -----------------------------------------------------------------------------------
def _forward_inputs(learner: Replay) -> list[torch.Tensor]:
    inputs: list[torch.Tensor] = []
    learner.net.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    return inputs


def test_each_step_is_one_forward_over_the_stream_batch_and_an_equal_size_buffer_batch():
    learner = Replay(_context(), buffer_size=30)
    inputs = _forward_inputs(learner)
    learner.learn(*_ids(0, 8), None)  # buffer empty: the stream batch alone
    assert [len(i) for i in inputs] == [8]
    for step in range(1, 6):
        before = set(_stored_ids(learner))
        x, y = _ids(100 * step, 8)
        learner.learn(x, y, None)
        assert len(inputs) == step + 1, "one forward pass per learn()"
        batch = inputs[-1]
        assert len(batch) == 16
        assert torch.equal(batch[:8], x)
        replayed = batch[8:, 0, 0, 0].long().tolist()
        assert len(set(replayed)) == 8 and set(replayed) <= before  # from the buffer, without replacement


def test_replay_batch_size_and_a_buffer_smaller_than_the_batch():
    learner = Replay(_context(), buffer_size=3)
    inputs = _forward_inputs(learner)
    for step in range(3):
        learner.learn(*_ids(10 * step, 8), None)
    assert [len(i) for i in inputs] == [8, 11, 11]  # at most what the buffer holds
    learner = Replay(_context(), buffer_size=30, replay_batch_size=5)
    inputs = _forward_inputs(learner)
    for step in range(3):
        learner.learn(*_ids(10 * step, 8), None)
    assert [len(i) for i in inputs] == [8, 13, 13]
    learner.learn(*_ids(99, 1), None)  # online: a batch of one still replays replay_batch_size samples
    assert len(inputs[-1]) == 6


# ---- it works: split-digits ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return build_scenario(load_spec("split-digits"))


def test_replay_forgets_much_less_than_finetune_on_split_digits(digits):
    finetune = summary(runner.run(digits, get_learner("finetune"), seed=0, progress=False, device="cpu").accuracy_matrix)
    replay = summary(runner.run(digits, get_learner("replay"), {"buffer_size": 200}, seed=0, progress=False,
                                device="cpu").accuracy_matrix)
    # seen (seed 0, CPU): finetune final 19.8%, forgetting 99.7; replay(200) final 90.1%, forgetting 11.5
    assert finetune["final_accuracy"] < 25 and finetune["forgetting"] > 90
    assert replay["final_accuracy"] > 80 and replay["forgetting"] < 25
    assert replay["final_accuracy"] > finetune["final_accuracy"] + 55


def test_a_larger_buffer_forgets_less(digits):
    forgetting = {size: summary(runner.run(digits, Replay, {"buffer_size": size}, seed=0, progress=False,
                                           device="cpu").accuracy_matrix)["forgetting"] for size in (50, 500)}
    assert forgetting[500] + 8 < forgetting[50]  # seen: 6.5 vs 23.8


def test_replay_works_online_and_task_free(digits):
    spec = load_spec("split-digits").with_overrides({"online": True, "epochs": 1, "batch_size": 10,
                                                     "task_boundaries": False})
    result = runner.run(build_scenario(spec), Replay, {"buffer_size": 200}, seed=0, progress=False, device="cpu")
    assert summary(result.accuracy_matrix)["final_accuracy"] > 70  # seen 86.0 (finetune: 9.8)


# ---- state -----------------------------------------------------------------------------------------------
def _batches(seed: int, count: int, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *SHAPE, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(count)]


@pytest.mark.parametrize("split", [2, 7])  # resumed while the buffer is filling, and after it is full
def test_a_resumed_learner_continues_exactly_as_the_original(split):
    batches, query = _batches(1, 12), torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    through = Replay(_context(seed=0), buffer_size=20)
    for x, y in batches:
        through.learn(x, y, None)

    torch.manual_seed(0)
    first = Replay(_context(seed=0), buffer_size=20)
    for x, y in batches[:split]:
        first.learn(x, y, None)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    torch.manual_seed(123)  # different initial weights and a different generator seed: all must come from the state
    resumed = Replay(_context(seed=5), buffer_size=20)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for x, y in batches[split:]:
        resumed.learn(x, y, None)

    assert resumed.seen == through.seen
    assert torch.equal(resumed.buffer_x, through.buffer_x) and torch.equal(resumed.buffer_y, through.buffer_y)
    assert torch.equal(resumed.predict(query, None), through.predict(query, None))


def test_state_of_an_untrained_learner_and_of_another_buffer_size():
    fresh = Replay(_context(), buffer_size=20)
    state = fresh.state_dict()
    assert "buffer_x" not in state and state["seen"] == 0
    trained = Replay(_context(), buffer_size=20)
    trained.learn(*_ids(0, 30), None)
    trained.load_state_dict(state)  # back to empty
    assert trained.buffer_x is None and trained.seen == 0 and trained.filled == 0
    trained.learn(*_ids(0, 30), None)
    with pytest.raises(ClbenchError, match="buffer_size"):
        Replay(_context(), buffer_size=10).load_state_dict(trained.state_dict())


# ---- hyper-parameters and the contract ------------------------------------------------------------------
def test_hyperparameters_extend_finetunes():
    declared = Replay.hyperparameters()
    for name, hp in Finetune.hyperparameters().items():
        assert declared[name] == hp
    assert declared["buffer_size"].default == 500 and declared["replay_batch_size"].default == 0
    assert Replay.online and not Replay.needs_task_ids and Replay.wants == "images"


@pytest.mark.parametrize("given,name", [({"buffer_size": 0}, "buffer_size"), ({"buffer_size": -5}, "buffer_size"),
                                        ({"replay_batch_size": -1}, "replay_batch_size")])
def test_invalid_sizes_are_one_line_errors_naming_the_parameter(given, name):
    with pytest.raises(ClbenchError, match=name):
        Replay(_context(), **given)


def test_registered_and_conforms():
    assert get_learner("replay") is Replay
    check_learner(Replay)
    check_learner(Replay, buffer_size=3, replay_batch_size=2)
