"""protonet: prototype arithmetic, the episode loss and sampler, meta-training, federated merges of
(sum, count) deltas, the episodic state, 2-D (pre-encoded) inputs, and the conformance suite."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from clbench.backbones import make_backbone
from clbench.errors import ClbenchError
from clbench.learner import Context, ExperienceInfo
from clbench.learners.protonet import EpisodeSampler, ProtoNet, prototypical_loss
from clbench.learners.prototypes import LOWEST_SCORE, PrototypeMemory
from clbench.learners.simpleshot import SimpleShot
from clbench.runner import run, seed_everything
from clbench.testing import check_learner, learner_checks
from synthetic import make_scenario

SHAPE = (3, 16, 16)  # conv4 needs >= 16 px; 16 px keeps meta-training fast on a CPU (1 x 1 final map)
N_CLASSES = 40  # 0-19: base (meta-train) classes; 20-39: held-out classes


pytestmark = pytest.mark.usefixtures("single_thread")


def context(hidden: int = 16, seed: int = 0) -> Context:
    """A CPU context whose conv4 is narrow (`hidden` filters) for speed."""
    def factory(name: str | None = None, **kwargs):
        extra = {"hidden": hidden} if (name or "conv4") == "conv4" else {}
        return make_backbone(name or "conv4", SHAPE, **extra, **kwargs)
    return Context(device=torch.device("cpu"), num_classes=N_CLASSES, input_shape=SHAPE, seed=seed, backbone=factory)


def images(classes, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c: a fixed smooth random pattern (4 x 4 noise upsampled to 16 x 16) plus pixel noise."""
    coarse = torch.randn(N_CLASSES, 3, 4, 4, generator=torch.Generator().manual_seed(1000))
    templates = torch.nn.functional.interpolate(coarse, size=SHAPE[-1], mode="bilinear")
    y = torch.as_tensor(list(classes)).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    return templates[y] + 0.5 * torch.randn(len(y), *SHAPE, generator=g), y


def fit(learner, x: torch.Tensor, y: torch.Tensor, index: int = 0, batch: int = 50) -> None:
    """One experience, as the runner gives it."""
    info = ExperienceInfo(index, tuple(sorted(set(y.tolist()))), None, len(y), index + 1)
    learner.begin_experience(info)
    for xb, yb in zip(x.split(batch), y.split(batch)):
        learner.learn(xb, yb, None)
    learner.end_experience(info)


def make(cls=ProtoNet, seed: int = 0, **hp):
    seed_everything(seed)
    return cls(context(), **{"backbone": "conv4", **hp})


def held_out_accuracy(learner, episodes: int = 20, way: int = 5, shot: int = 1, query: int = 5) -> float:
    """Mean accuracy of N-way K-shot episodes on the held-out classes, restoring the episodic state."""
    accuracies = []
    for e in range(episodes):
        classes = (20 + torch.randperm(20, generator=torch.Generator().manual_seed(e))[:way]).tolist()
        xs, ys = images(classes, shot, seed=100 + e)
        xq, yq = images(classes, query, seed=500 + e)
        state = learner.episodic_state()
        learner.learn(xs, ys, None)
        mask = torch.zeros(N_CLASSES, dtype=torch.bool)
        mask[classes] = True
        scores = learner.predict(xq, None).masked_fill(~mask, float("-inf"))
        accuracies.append((scores.argmax(1) == yq).float().mean().item())
        learner.load_episodic_state(state)
    return sum(accuracies) / len(accuracies)


# ---- prototype arithmetic ------------------------------------------------------------------------
def test_prototype_memory_by_hand() -> None:
    memory = PrototypeMemory(num_classes=3, dim=2, device=torch.device("cpu"))
    memory.add(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0, 0]))
    assert memory.means()[0].tolist() == [2.0, 3.0]
    # adding k = 1 sample m = (5, 0) to n = 2, p = (2, 3): n = 3, p + (1/3)(m - p) = (3, 2)
    memory.add(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert memory.counts.tolist() == [3.0, 0.0, 0.0]
    assert torch.allclose(memory.means()[0], torch.tensor([3.0, 2.0], dtype=torch.float64))
    memory.add(torch.tensor([[1.0, 1.0]]), torch.tensor([2]))
    scores = memory.scores(torch.tensor([[0.0, 0.0], [3.0, 2.0]]))
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores[:, 0].tolist() == [-13.0, 0.0]  # -||x - (3, 2)||^2
    assert scores[:, 2].tolist() == [-2.0, -5.0]  # -||x - (1, 1)||^2
    assert scores[:, 1].tolist() == [LOWEST_SCORE, LOWEST_SCORE]  # class 1 holds no prototype


def test_incremental_updates_equal_the_batch_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g)
    memory = PrototypeMemory(4, 5, torch.device("cpu"))
    n, p = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 5, dtype=torch.float64)
    for xb, yb in zip(x.split(7), y.split(7)):
        memory.add(xb, yb)
        for c in yb.unique():  # the textbook update: n <- n + k; p <- p + (k / n)(m - p)
            k, m = (yb == c).sum(), xb[yb == c].double().mean(0)
            n[c] += k
            p[c] += (k / n[c]) * (m - p[c])
    for c in range(4):
        assert torch.allclose(memory.means()[c], x[y == c].double().mean(0))
        assert torch.allclose(memory.means()[c], p[c])
    assert memory.counts.tolist() == n.tolist()


# ---- the episode loss and sampler ----------------------------------------------------------------
def test_prototypical_loss_on_a_hand_made_2_way_1_shot_episode() -> None:
    support = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]], dtype=torch.float64)  # prototypes (0, 0) and (2, 0)
    query = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]]], dtype=torch.float64)  # squared distances: (1, 5) and (9, 1)
    expected = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-8))) / 2
    assert prototypical_loss(support, query).item() == pytest.approx(expected, rel=1e-6)
    # proto-triplet, margin 2: max(0, d_own - d_nearest_other + 2) with d = Euclidean distance
    triplet = (max(0.0, 1 - math.sqrt(5) + 2) + max(0.0, 1 - 3 + 2)) / 2
    value = prototypical_loss(support, query, "proto-triplet", margin=2.0).item()
    assert value == pytest.approx(expected + triplet, rel=1e-6)


def test_episode_sampler_draws_distinct_classes_and_images_and_clamps() -> None:
    y = torch.tensor([0] * 3 + [1] * 5 + [2] * 1 + [3] * 4)
    y = y[torch.randperm(13, generator=torch.Generator().manual_seed(0))]
    sampler = EpisodeSampler(y, way=10, shot=5, query=15, gen=torch.Generator().manual_seed(0))
    # class 2 (one image) is left out; way 10 -> 3 classes; shot + query -> 3 (smallest class): 2 + 1
    assert (sampler.way, sampler.shot, sampler.query) == (3, 2, 1) and sampler.usable
    for _ in range(20):
        index = sampler.sample()
        assert index.shape == (3, 3)
        labels = y[index]
        assert (labels == labels[:, :1]).all() and len(labels[:, 0].unique()) == 3 and 2 not in labels
        assert all(len(row.unique()) == 3 for row in index)
    assert not EpisodeSampler(torch.tensor([4, 4, 4]), 5, 1, 1, torch.Generator()).usable


def test_meta_training_improves_held_out_episodes() -> None:
    x, y = images(range(20), 20, seed=1)
    untrained, trained = make(episodes=0), make(episodes=30, train_way=10, train_shot=2, train_query=3)
    fit(untrained, x, y)
    fit(trained, x, y)
    assert not any(p.requires_grad for p in trained.encoder.parameters()) and not trained.encoder.training
    before, after = held_out_accuracy(untrained), held_out_accuracy(trained)
    assert after > before + 0.1, (before, after)
    assert after > 0.9


def test_base_classes_are_predictable_and_the_base_data_released() -> None:
    x, y = images(range(4), 10, seed=3)
    learner = make(episodes=3, train_way=4, train_shot=2, train_query=2)
    fit(learner, x, y)
    assert learner.memory.counts[:4].tolist() == [10.0] * 4 and learner._pending_x == []
    xq, yq = images(range(4), 5, seed=4)
    assert (learner.predict(xq, None).argmax(1) == yq).float().mean() > 0.9


def test_degenerate_base_experiences_do_not_crash_and_say_so() -> None:
    for classes, per, message in (([0], 5, "no meta-training"), ([0, 1], 1, "no meta-training"),
                                  ([0, 1, 2], 2, "clamped to 3-way 1-shot 1-query")):
        x, y = images(classes, per, seed=5)
        learner = make(episodes=2)
        with pytest.warns(UserWarning, match=message):
            fit(learner, x, y, batch=1)
        assert learner.base_done and learner.memory.counts.sum() == len(y)


def test_repeated_passes_over_an_experience_count_each_sample_once() -> None:
    """The runner's epochs > 1 feed an experience again: base data are stored once, novel samples
    counted once, also across a batch that straddles the end of a pass and across a state reload."""
    x, y = images(range(4), 5, seed=3)
    once, thrice = make(episodes=0), make(episodes=0)
    fit(once, x, y)
    info = ExperienceInfo(0, (0, 1, 2, 3), None, len(y), 2)
    thrice.begin_experience(info)
    batches = list(zip(torch.cat([x] * 3).split(7), torch.cat([y] * 3).split(7)))  # batch 3 straddles a pass
    for xb, yb in batches[:2]:
        thrice.learn(xb, yb, None)
    resumed = make(episodes=0)
    resumed.load_state_dict(thrice.state_dict())
    for xb, yb in batches[2:]:
        resumed.learn(xb, yb, None)
    assert torch.equal(resumed.state_dict()["pending_x"], x)
    resumed.end_experience(info)
    novel_x, novel_y = images(range(4, 6), 3, seed=4)
    novel = ExperienceInfo(1, (4, 5), None, len(novel_y), 2)
    for learner in (once, resumed):
        learner.begin_experience(novel)
        for _ in range(3):
            learner.learn(novel_x, novel_y, None)
        learner.end_experience(novel)
    assert resumed.memory.counts[:6].tolist() == [5, 5, 5, 5, 3, 3]
    assert torch.equal(resumed.memory.sums, once.memory.sums)


def test_without_task_boundaries_the_first_prediction_closes_the_base_phase() -> None:
    x, y = images(range(4), 5, seed=6)
    learner = make(episodes=2, train_way=4, train_shot=2, train_query=2)
    for xb, yb in zip(x.split(7), y.split(7)):
        learner.learn(xb, yb, None)
    buffer = io.BytesIO()  # pending base data travel with the state (resume mid-experience)
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(episodes=2, train_way=4, train_shot=2, train_query=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():  # as the runner evaluates
        scores = learner.predict(x, None)
        assert learner.base_done and learner.memory.counts.sum() == 20
        assert torch.equal(scores, resumed.predict(x, None))


# ---- episodic state and pre-encoded inputs ----------------------------------------------------------
def test_episodic_restore_leaves_predictions_and_the_full_state_unchanged() -> None:
    learner = make(episodes=3, train_way=5, train_shot=2, train_query=2)
    fit(learner, *images(range(20), 5, seed=7))
    xq, _ = images(range(20, 40), 3, seed=8)
    before, full = learner.predict(xq, None), copy.deepcopy(learner.state_dict())
    state = learner.episodic_state()
    assert set(state) == {"sums", "counts"}
    learner.learn(*images(range(20, 25), 2, seed=9), None)
    assert not torch.equal(before, learner.predict(xq, None))
    learner.load_episodic_state(state)
    assert torch.equal(before, learner.predict(xq, None))
    after = learner.state_dict()
    for key in ("sums", "counts", "origin_sums", "origin_counts"):
        assert torch.equal(full["memory"][key], after["memory"][key])
    assert all(torch.equal(full["encoder"][k], v) for k, v in after["encoder"].items())


def test_encoded_inputs_give_the_same_predictions_as_images() -> None:
    learner = make(episodes=3, train_way=5, train_shot=2, train_query=2)
    fit(learner, *images(range(20), 5, seed=10))
    xs, ys = images(range(20, 25), 2, seed=11)
    xq, _ = images(range(20, 25), 4, seed=12)
    state = learner.episodic_state()
    learner.learn(xs, ys, None)
    from_images = learner.predict(xq, None)
    learner.load_episodic_state(state)
    embedded_support, embedded_query = learner.encode(xs), learner.encode(xq)
    assert embedded_support.shape == (10, learner.encoder.out_dim) and embedded_support.dtype == torch.float32
    learner.learn(embedded_support, ys, None)
    assert torch.allclose(from_images, learner.predict(embedded_query, None))
    with pytest.raises(ClbenchError, match="embeddings"):
        learner.predict(torch.zeros(2, 3), None)


def test_frozen_encoding_follows_the_loaded_encoder() -> None:
    """encode() runs a folded, channels-last copy of the trained encoder: it computes what the encoder
    computes in eval mode, and a loaded state replaces it (never a stale copy)."""
    trained = make(episodes=3, train_way=5, train_shot=2, train_query=2)
    fit(trained, *images(range(20), 5, seed=16))
    other = make(seed=1, episodes=3, train_way=5, train_shot=2, train_query=2)
    fit(other, *images(range(20), 5, seed=17))
    x, _ = images(range(20, 25), 3, seed=18)
    with torch.no_grad():
        expected = trained.encoder.eval()(x)
    assert torch.allclose(trained.encode(x), expected, rtol=1e-4, atol=1e-5)
    other.load_state_dict(trained.state_dict())
    assert torch.allclose(other.encode(x), trained.encode(x), rtol=1e-5, atol=1e-6)


# ---- federated merge ----------------------------------------------------------------------------------
def _same_memory(a, b) -> None:
    assert torch.allclose(a.memory.counts, b.memory.counts)
    assert torch.allclose(a.memory.sums, b.memory.sums, rtol=1e-10, atol=1e-9)


def test_merging_two_clients_equals_one_learner_on_both_datasets() -> None:
    xa, ya = images(range(0, 6), 4, seed=13)
    xb, yb = images(range(4, 10), 3, seed=14)  # classes 4 and 5 on both clients
    xq, _ = images(range(10), 3, seed=15)

    def client(x, y):
        learner = make(episodes=0)  # frozen random encoder: the same on every client (same seed)
        fit(learner, x, y)
        return learner

    single = make(episodes=0)
    fit(single, torch.cat([xa, xb]), torch.cat([ya, yb]))
    for first, second in (((xa, ya), (xb, yb)), ((xb, yb), (xa, ya))):
        merged, other = client(*first), client(*second)
        merged.merge([other])
        _same_memory(merged, single)
        assert torch.allclose(merged.predict(xq, None), single.predict(xq, None), rtol=1e-5)


def test_server_clients_merge_round_does_not_double_count() -> None:
    server = make(episodes=5, train_way=4, train_shot=2, train_query=2)
    fit(server, *images(range(4), 6, seed=16))  # the server's base classes 0-3
    shared = copy.deepcopy(server.state_dict())
    reference = make()
    reference.load_state_dict(copy.deepcopy(shared))  # one learner that sees every client's data

    clients = []
    for seed, classes in ((17, [0, 4, 5]), (18, [6, 7, 0])):  # class 0 comes back on both clients
        learner = make()
        learner.load_state_dict(copy.deepcopy(shared))
        x, y = images(classes, 3, seed=seed)
        fit(learner, x, y, index=1)
        fit(reference, x, y, index=1)
        clients.append(learner)
    assert torch.equal(clients[0].memory.origin_counts, server.memory.counts)

    orders = []
    for order in (clients, clients[::-1]):
        merged = make()
        merged.load_state_dict(copy.deepcopy(shared))
        merged.merge(order)
        orders.append(merged)
        _same_memory(merged, reference)
    assert orders[0].memory.counts[:8].tolist() == [12.0, 6, 6, 6, 3, 3, 3, 3]  # 6 base + 3 + 3 for class 0
    xq, _ = images(range(8), 2, seed=19)
    assert torch.allclose(orders[0].predict(xq, None), reference.predict(xq, None), rtol=1e-5)
    server.merge(clients)  # the server itself (its origin is zero: it never loaded a state) gives the same
    _same_memory(server, reference)
    before = server.predict(xq, None)
    server.merge([make()])  # an untrained learner adds nothing
    assert torch.equal(before, server.predict(xq, None))


def test_merge_refuses_other_kinds_dimensions_and_encoders_in_one_line() -> None:
    x, y = images(range(3), 4, seed=20)
    a, b = make(episodes=0), make(episodes=3, train_way=3, train_shot=2, train_query=2)
    fit(a, x, y)
    fit(b, x, y)
    other_kind = make(SimpleShot, epochs=0)
    other_dim = make(episodes=0, backbone="small_cnn")  # 64-d, conv4 here gives 16-d
    fit(other_dim, x, y)
    before = a.memory.sums.clone()
    for other, message in ((other_kind, "only learners of the same kind"), (other_dim, "output size"),
                           (b, "encoders differ")):
        with pytest.raises(ClbenchError, match=message) as info:
            a.merge([other])
        assert "\n" not in str(info.value)
    with pytest.raises(ClbenchError, match="encoders differ"):
        a.merge([make(episodes=0), b])  # checked before anything is added
    assert torch.equal(before, a.memory.sums)


# ---- hyper-parameters, the runner, the conformance suite -------------------------------------------
def test_hyperparameters_are_validated() -> None:
    for bad in ({"train_way": 1}, {"episodes": -1}, {"lr": 0.0}, {"loss": "triplet"}, {"backbone": "vit"}):
        with pytest.raises(ClbenchError, match=next(iter(bad))):
            make(**bad)


def test_runs_through_the_runner() -> None:
    result = run(make_scenario(n_classes=4, n_experiences=2, per_class=6), ProtoNet,
                 {"episodes": 5, "train_way": 2, "train_shot": 2, "train_query": 2}, progress=False, device="cpu")
    assert len(result.accuracy_matrix) == 2 and result.accuracy_matrix[1][1] > 50


REGISTRY_HP = {"episodes": 0}  # what the registry conformance test gives protonet (merge needs one shared encoder)
META_TRAINED_HP = {"episodes": 4, "train_way": 3, "train_shot": 2, "train_query": 2}


def test_conformance_with_the_registry_hyperparameters() -> None:
    check_learner(ProtoNet, **REGISTRY_HP)


@pytest.mark.filterwarnings("ignore:protonet")  # the suite's tiny experiences clamp the episodes
@pytest.mark.parametrize("hp", [META_TRAINED_HP, {**META_TRAINED_HP, "loss": "proto-triplet"}])
def test_conformance_with_meta_training(hp) -> None:
    """Every check but `merge` (independently meta-trained encoders cannot merge: a ClbenchError)."""
    for name, check in learner_checks(ProtoNet, **hp):
        if name != "merge":
            check()
