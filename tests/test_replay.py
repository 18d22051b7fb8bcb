"""The `replay` learner (Experience Replay with a reservoir buffer): the buffer it keeps, the replay step
(ER, ER-ACE, DER++), forgetting on split-digits, exact resume, bad input and the conformance suite.
The reservoir policy itself is tested in test_buffer.py."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from clbench import runner
from clbench.backbones import backbone_factory
from clbench.errors import ClbenchError
from clbench.learner import Context, get_learner
from clbench.learners.finetune import Finetune
from clbench.learners.replay import Replay, ace_hidden, ace_loss
from clbench.metrics import summary
from clbench.scenario import build_scenario, load_spec
from clbench.testing import check_learner

SHAPE = (1, 2, 2)


pytestmark = pytest.mark.usefixtures("single_thread")


def _context(seed: int = 0, num_classes: int = 4, n_experiences: int = 1) -> Context:
    return Context(torch.device("cpu"), num_classes=num_classes, input_shape=SHAPE, seed=seed,
                   backbone=backbone_factory("mlp", SHAPE), n_experiences=n_experiences)


def _ids(first: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples numbered first .. first + n - 1: every pixel holds the number (exact in float32)."""
    ids = torch.arange(first, first + n, dtype=torch.float32)
    return ids.view(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous(), torch.arange(first, first + n) % 4


def _stored_ids(learner: Replay) -> list[int]:
    return learner.buffer.x[: learner.buffer.filled, 0, 0, 0].long().tolist()


def test_buffer_holds_exactly_the_samples_seen_until_full_then_a_subset_never_larger():
    learner = Replay(_context(), buffer_size=20)
    seen = 0
    for b in (3, 8, 1, 16, 5, 40, 2):
        learner.learn(*_ids(seen, b), None)
        seen += b
        assert learner.buffer.x.shape[0] == learner.buffer.y.shape[0] == 20
        assert learner.buffer.seen == seen and learner.buffer.filled == min(seen, 20)
        stored = _stored_ids(learner)
        if seen <= 20:
            assert stored == list(range(seen))  # in arrival order
        else:
            assert len(set(stored)) == 20 and all(0 <= s < seen for s in stored)
        assert learner.buffer.y[: learner.buffer.filled].tolist() == [s % 4 for s in stored]  # labels stay with inputs


# ---- the replay step -----------------------------------------------------------------------------------
def _forward_inputs(learner: Replay) -> list[torch.Tensor]:
    inputs: list[torch.Tensor] = []
    learner.net.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    return inputs


@pytest.mark.parametrize("loss", ["er", "er-ace"])
def test_each_step_is_one_forward_over_the_stream_batch_and_an_equal_size_buffer_batch(loss):
    learner = Replay(_context(), buffer_size=30, loss=loss)
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


def test_er_ace_hides_the_hidden_classes_from_the_stream_softmax_only():
    stream = torch.tensor([[2.0, 0.0, 9.0, 9.0], [0.0, 1.0, -3.0, 7.0]], requires_grad=True)
    replayed = torch.tensor([[0.0, 0.0, 5.0, 0.0]], requires_grad=True)
    y, y_replayed = torch.tensor([0, 1]), torch.tensor([2])
    hidden = torch.tensor([False, False, True, False])  # class 2 seen before, absent; class 3 never seen
    loss = ace_loss(stream, y, replayed, y_replayed, hidden)
    # stream: softmax over classes {0, 1, 3}; replay: over all classes
    expected = F.cross_entropy(stream[:, [0, 1, 3]], y) + F.cross_entropy(replayed, y_replayed)
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert stream.grad[:, 2].abs().sum() == 0 and stream.grad[:, 3].abs().min() > 0 and replayed.grad.abs().min() > 0
    nothing = torch.zeros(4, dtype=torch.bool)
    assert ace_loss(stream, y, None, None, nothing).item() == pytest.approx(F.cross_entropy(stream, y).item())


def test_er_ace_hides_nothing_in_the_first_task_then_the_seen_classes_absent_from_the_batch():
    seen = torch.tensor([True, True, True, False, False])  # classes 0-2 seen, 3-4 not yet
    y = torch.tensor([2, 2, 1])
    assert ace_hidden(seen, y, torch.tensor(0)).tolist() == [False] * 5
    assert ace_hidden(seen, y, torch.tensor(1)).tolist() == [True, False, False, False, False]


def test_er_ace_learner_masks_from_the_second_task_and_never_an_unseen_class():
    learner = Replay(_context(num_classes=6, n_experiences=3), buffer_size=50, loss="er-ace")  # 2 classes a task
    grads: list[torch.Tensor] = []

    def keep_grad(module, args, out):
        out.register_hook(lambda g: grads.append(g.clone()))

    learner.net.register_forward_hook(keep_grad)
    stream_rows, g = [], torch.Generator().manual_seed(0)
    for labels in ([0, 1, 0, 1], [1, 1, 1, 1], [2, 3, 2, 3], [3, 3, 3, 3]):
        learner.learn(torch.randn(4, *SHAPE, generator=g), torch.tensor(labels), None)
        stream_rows.append(grads[-1][:4].abs().sum(0))  # the stream rows' logit gradients, per class
    # task 0: plain cross-entropy, every class's logit learns (also class 0, seen but absent from [1, 1, 1, 1])
    assert all(g.min() > 0 for g in stream_rows[:2])
    # task 1: classes 0, 1 (seen, absent) are hidden; the unseen classes 4, 5 are not
    assert stream_rows[2][:2].tolist() == [0, 0] and stream_rows[2][2:].min() > 0
    assert stream_rows[3][:3].tolist() == [0, 0, 0] and stream_rows[3][3:].min() > 0  # class 2 now hidden too


def test_der_stores_logits_at_insertion_and_never_updates_them():
    learner = Replay(_context(), buffer_size=100, loss="der", replay_batch_size=3)
    outputs: list[torch.Tensor] = []
    learner.net.register_forward_hook(lambda module, args, out: outputs.append(out.detach().clone()))
    for step in range(5):
        learner.learn(*_ids(10 * step, 4), None)
    assert [len(o) for o in outputs] == [4, 10, 10, 10, 10]  # stream + two independent replay draws, one pass
    stored = learner.buffer.logits[: learner.buffer.filled]
    at_insertion = torch.cat([o[:4] for o in outputs])  # the never-overwritten buffer holds samples in order
    assert torch.equal(stored, at_insertion)
    now = learner.predict(learner.buffer.x[:4], None)
    assert not torch.allclose(now, stored[:4])  # the network moved on, the stored logits did not


def test_der_terms_are_weighted_by_alpha_and_beta():
    learner = Replay(_context(), buffer_size=100, loss="der", alpha=0.0, beta=0.0, lr=0.1)
    twin = Finetune(_context(), lr=0.1)  # the stream's cross-entropy alone is DER++ with alpha = beta = 0
    twin.net.load_state_dict(learner.net.state_dict())
    for step in range(3):
        learner.learn(*_ids(10 * step, 4), None)
        twin.learn(*_ids(10 * step, 4), None)
    query = _ids(100, 6)[0]
    assert torch.allclose(learner.predict(query, None), twin.predict(query, None), atol=1e-6)


def test_the_runners_images_are_buffered_as_uint8():
    context = Context(torch.device("cpu"), num_classes=4, input_shape=SHAPE, seed=0,
                      backbone=backbone_factory("mlp", SHAPE, input_norm=((0.5,), (0.5,))))
    learner = Replay(context, buffer_size=8)
    pixels = torch.randint(0, 256, (6, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    learner.learn((pixels.float() / 255 - 0.5) / 0.5, torch.arange(6) % 4, None)
    assert learner.buffer.x.dtype == torch.uint8 and torch.equal(learner.buffer.x[:6], pixels)


# ---- a step never waits for the device ------------------------------------------------------------------
class _BlockingCopies(TorchDispatchMode):
    """Records each copy between devices that is not non-blocking: a blocking host-to-device copy
    waits for every kernel queued before it, a host synchronisation."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            source, target = args[0].device, kwargs.get("device") or args[0].device
            non_blocking = kwargs.get("non_blocking", False)
        elif func is torch.ops.aten.copy_.default:
            target, source = args[0].device, args[1].device
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        else:
            source = target = non_blocking = None
        if source != target and not non_blocking:
            self.blocking.append(f"{func} {source} -> {target}")
        return func(*args, **kwargs)


VARIANTS = [("replay", {}), ("replay", {"loss": "er-ace"}), ("replay", {"loss": "der"}), ("adab2n", {}),
            ("adab2n", {"loss": "der"})]


def _learner_and_four_batches(name: str, hyperparameters: dict, device: torch.device) -> tuple[Replay, list]:
    context = Context(device, num_classes=6, input_shape=(1, 8, 8), seed=0, n_experiences=3,
                      backbone=backbone_factory("small_cnn", (1, 8, 8), input_norm=((0.5,), (0.5,))))
    learner = get_learner(name)(context, buffer_size=8, **hyperparameters)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(5, 1, 8, 8, generator=g).to(device), torch.randint(0, 6, (5,), generator=g).to(device))
               for _ in range(4)]  # the buffer fills (8) at the second step, then replaces
    return learner, batches


@pytest.mark.parametrize("name,hyperparameters", VARIANTS)
def test_a_training_step_never_waits_for_the_device(name, hyperparameters):
    # meta tensors hold no values: whatever would read one on the host (.item(), bool(), int(), a shape that
    # depends on the data: nonzero, unique, bincount, boolean indexing) raises; copies to it must not block
    learner, batches = _learner_and_four_batches(name, hyperparameters, torch.device("meta"))
    copies = _BlockingCopies()
    with copies:
        for x, y in batches:
            learner.learn(x, y, None)
    assert learner.buffer.seen == 20 and learner.buffer.x.device.type == "meta"
    assert copies.blocking == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CLBENCH_TEST_DEVICE=cuda)")
@pytest.mark.parametrize("name,hyperparameters", VARIANTS)
def test_on_a_gpu_a_training_step_never_synchronises(name, hyperparameters):
    learner, batches = _learner_and_four_batches(name, hyperparameters, torch.device("cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        for x, y in batches:
            learner.learn(x, y, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert learner.buffer.seen == 20


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

    assert resumed.buffer.seen == through.buffer.seen
    assert torch.equal(resumed.buffer.x, through.buffer.x) and torch.equal(resumed.buffer.y, through.buffer.y)
    assert torch.equal(resumed.predict(query, None), through.predict(query, None))


def test_state_of_an_untrained_learner_and_of_another_buffer_size():
    fresh = Replay(_context(), buffer_size=20)
    state = fresh.state_dict()
    assert "x" not in state["buffer"] and state["buffer"]["seen"] == 0
    trained = Replay(_context(), buffer_size=20)
    trained.learn(*_ids(0, 30), None)
    trained.load_state_dict(state)  # back to empty
    assert trained.buffer.x is None and trained.buffer.seen == 0 and trained.buffer.filled == 0
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


@pytest.mark.parametrize("given,message", [
    ({"buffer_size": 5, "replay_batch_size": 10}, "replay_batch_size=10 exceeds buffer_size=5"),
    ({"alpha": 0.3}, "alpha acts only with loss=der, not loss=er"),
    ({"loss": "er-ace", "beta": 1.0}, "beta acts only with loss=der"),
    ({"kappa": 0.7}, "kappa acts only with norm=adab2n, not norm=bn"),
    ({"norm": "adab2n"}, "norm=adab2n: the network has no BatchNorm2d layer"),  # the context's backbone is an MLP
    ({"loss": "ace"}, "accepted: er | er-ace | der"),
])
def test_bad_combinations_are_one_line_errors(given, message):
    with pytest.raises(ClbenchError, match=message) as error:
        Replay(_context(), **given)
    assert "\n" not in str(error.value)


# ER-ACE with its papers' optimiser: its loss sums two cross-entropies (stream, replay), twice ER's step, and
# with finetune's lr 0.05 and momentum 0.9 the harness's MLP diverges once the first task's stream is unmasked
@pytest.mark.parametrize("hyperparameters", [{}, {"buffer_size": 3, "replay_batch_size": 2},
                                             {"loss": "er-ace", "lr": 0.03, "momentum": 0.0},
                                             {"loss": "der", "buffer_size": 6}])
def test_registered_and_conforms(hyperparameters):
    assert get_learner("replay") is Replay
    check_learner(Replay, **hyperparameters)
