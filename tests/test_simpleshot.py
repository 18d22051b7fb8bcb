"""simpleshot: base training, the feature transforms, the transductive refinement, merges, and the
conformance suite (the prototype arithmetic it shares with protonet is tested in test_protonet.py)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from clbench.errors import ClbenchError
from clbench.learners.prototypes import LOWEST_SCORE, PrototypeMemory
from clbench.learners.simpleshot import SimpleShot, transductive_scores, transform_features
from clbench.runner import run
from clbench.testing import check_learner, learner_checks
from synthetic import make_scenario
from test_protonet import fit, held_out_accuracy, images, make


pytestmark = pytest.mark.usefixtures("single_thread")


def simpleshot(**hp) -> SimpleShot:
    return make(SimpleShot, **hp)


def test_base_training_beats_a_random_encoder_on_held_out_classes() -> None:
    x, y = images(range(20), 20, seed=1)
    untrained, trained = simpleshot(epochs=0), simpleshot(epochs=3, batch_size=32, lr=0.05)
    fit(untrained, x, y)
    fit(trained, x, y)
    assert not any(p.requires_grad for p in trained.encoder.parameters()) and not trained.encoder.training
    before, after = held_out_accuracy(untrained), held_out_accuracy(trained)
    assert after > before + 0.1, (before, after)


def test_feature_transforms_by_hand() -> None:
    f, mean = torch.tensor([[4.0, 5.0], [1.0, 1.0]]), torch.tensor([1.0, 1.0])
    assert torch.equal(transform_features(f, "none", mean), f)
    assert torch.allclose(transform_features(f, "l2", mean)[0], torch.tensor([4.0, 5.0]) / math.sqrt(41))
    cl2n = transform_features(f, "cl2n", mean)
    assert torch.allclose(cl2n[0], torch.tensor([0.6, 0.8]))  # (4 - 1, 5 - 1) / 5
    assert torch.equal(cl2n[1], torch.zeros(2))  # the base mean itself: zero, not NaN


def test_cl2n_base_mean_and_prototypes_come_from_the_base_data() -> None:
    x, y = images(range(4), 6, seed=2)
    learner = simpleshot(epochs=1, batch_size=8)
    fit(learner, x, y)
    features = learner.encode(x)
    assert torch.allclose(learner.base_mean, features.mean(0), atol=1e-6)
    normalised = torch.nn.functional.normalize(features - features.mean(0), dim=1)
    for c in range(4):
        assert torch.allclose(learner.memory.means()[c].float(), normalised[y == c].mean(0), atol=1e-6)
    # 2-D inputs are encode() outputs (before the transform): same predictions as images
    assert torch.allclose(learner.predict(x, None), learner.predict(features, None))


def test_transductive_refinement_by_hand() -> None:
    memory = PrototypeMemory(3, 2, torch.device("cpu"))
    memory.add(torch.tensor([[0.0, 0.0], [4.0, 0.0]]), torch.tensor([0, 2]))  # support: class 0 at 0, class 2 at 4
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    before = copy.deepcopy(memory.state())
    # shift by support mean (2, 0) - query mean (7/3, 0): queries at 2/3, 2/3, 14/3. One K-means step:
    # class 0 gets the two queries at 2/3 -> (0 + 4/3) / 3 = 4/9; class 2 the one at 14/3 -> (4 + 14/3) / 2 = 13/3
    scores = transductive_scores(queries, memory, steps=1)
    shifted = torch.tensor([2 / 3, 2 / 3, 14 / 3])
    assert torch.allclose(scores[:, 0], -(shifted - 4 / 9) ** 2)
    assert torch.allclose(scores[:, 2], -(shifted - 13 / 3) ** 2)
    assert scores[:, 1].tolist() == [LOWEST_SCORE] * 3
    assert all(torch.equal(before[k], v) for k, v in memory.state().items())  # the state is not touched
    # zero steps: the shifted queries against the prototypes
    assert torch.allclose(transductive_scores(queries, memory, steps=0)[:, 2], -(shifted - 4) ** 2)


def test_transductive_keeps_support_labels_fixed_and_undoes_a_shift() -> None:
    memory = PrototypeMemory(3, 2, torch.device("cpu"))
    support = torch.tensor([[0.0, 0.0], [0.0, 0.1], [3.0, 0.0], [3.0, 0.1], [0.0, 3.0], [0.1, 3.0]])
    memory.add(support, torch.tensor([0, 0, 1, 1, 2, 2]))
    labels = torch.tensor([0, 1, 2]).repeat(5)
    queries = memory.means()[labels].float() + torch.tensor([2.0, 2.0])  # every query shifted far off
    assert (memory.scores(queries).argmax(1) == labels).float().mean() < 0.7  # class 0 is lost
    assert torch.equal(transductive_scores(queries, memory, steps=10).argmax(1), labels)
    # all queries at one class's prototype: the other classes keep their support-only centroids
    lone = memory.means()[[0] * 4].float()
    scores = transductive_scores(lone, memory, steps=5)
    shifted = lone + (memory.means().mean(0) - lone.mean(0)).float()
    for c in (1, 2):
        assert torch.allclose(scores[:, c], -((shifted - memory.means()[c].float()) ** 2).sum(1), atol=1e-5)


def test_transductive_learner_runs_and_leaves_its_state_alone() -> None:
    learner = simpleshot(epochs=1, batch_size=16, transductive=True, kmeans_steps=3)
    fit(learner, *images(range(10), 5, seed=3))
    xq, _ = images(range(10), 4, seed=4)
    before = copy.deepcopy(learner.episodic_state())
    first = learner.predict(xq, None)
    assert torch.isfinite(first).all() and torch.equal(first, learner.predict(xq, None))
    assert all(torch.equal(before[k], v) for k, v in learner.episodic_state().items())


def test_transductive_over_novel_classes_leaves_the_base_classes_out_of_episodes() -> None:
    x, y = images(range(20), 10, seed=5)
    accuracy = {}
    for over in ("all", "novel"):
        learner = simpleshot(epochs=2, batch_size=32, lr=0.05, transductive=True, transductive_classes=over)
        fit(learner, x, y)
        assert learner.base_classes.tolist() == [True] * 20 + [False] * 20
        accuracy[over] = held_out_accuracy(learner, shot=2, query=6)
        xs, ys = images(range(20, 25), 2, seed=6)
        learner.learn(xs, ys, None)
        scores = learner.predict(images(range(20, 25), 3, seed=7)[0], None)
        assert (scores[:, :20] == LOWEST_SCORE).all() == (over == "novel")
    assert accuracy["novel"] > 0.9 and accuracy["novel"] >= accuracy["all"], accuracy


def test_clients_merge_like_one_learner_and_refuse_another_base() -> None:
    server = simpleshot(epochs=1, batch_size=8)
    fit(server, *images(range(4), 6, seed=5))
    shared = copy.deepcopy(server.state_dict())
    reference = simpleshot()
    reference.load_state_dict(copy.deepcopy(shared))
    clients = []
    for seed, classes in ((6, [0, 4]), (7, [5, 0])):  # class 0 comes back on both clients
        client = simpleshot()
        client.load_state_dict(copy.deepcopy(shared))
        x, y = images(classes, 3, seed=seed)
        fit(client, x, y, index=1)
        fit(reference, x, y, index=1)
        clients.append(client)
    server.merge(clients[::-1])
    assert torch.allclose(server.memory.counts, reference.memory.counts)
    assert torch.allclose(server.memory.sums, reference.memory.sums, rtol=1e-10, atol=1e-9)
    assert server.memory.counts[0] == 12
    stranger = simpleshot(epochs=0)  # same random encoder, another base set: another CL2N mean
    fit(stranger, *images(range(6, 8), 3, seed=8))
    with pytest.raises(ClbenchError, match="base feature means differ"):
        server.merge([stranger])
    with pytest.raises(ClbenchError, match="transforms differ"):
        server.merge([_trained(transform="l2")])


def _trained(**hp) -> SimpleShot:
    learner = simpleshot(epochs=0, **hp)
    fit(learner, *images(range(2), 3, seed=9))
    return learner


def test_the_runners_epochs_store_the_base_data_once_and_change_nothing() -> None:
    """The runner feeds epochs x n_samples; the base data are stored once (n_samples rows) and the
    learner's own `epochs` alone trains: the runner's epochs=3 gives epochs=1's result."""
    stored = []

    class Recording(SimpleShot):
        name = "recording"

        def _train_base(self, x: torch.Tensor, y: torch.Tensor) -> None:
            stored.append(len(x))
            super()._train_base(x, y)

    base = make_scenario(n_classes=4, n_experiences=2, per_class=6)
    results = [run(dataclasses.replace(base, spec=base.spec.with_overrides({"epochs": epochs})), Recording,
                   {"epochs": 2, "batch_size": 4}, progress=False, device="cpu").accuracy_matrix for epochs in (1, 3)]
    n_samples = len(base.stream.experiences[0].train_indices)
    assert stored == [n_samples, n_samples] and results[0] == results[1]


def test_hyperparameters_are_validated() -> None:
    for bad in ({"epochs": -1}, {"batch_size": 1}, {"lr": -0.1}, {"lr": float("nan")}, {"momentum": 1.0},
                {"transform": "zca"}, {"optimizer": "lbfgs"}):
        with pytest.raises(ClbenchError, match=next(iter(bad))):
            simpleshot(**bad)


REGISTRY_HP = {"epochs": 0, "transform": "l2"}  # the registry conformance test's (merge: one shared encoder and base)
TRAINED_HP = {"epochs": 2, "batch_size": 8}


def test_conformance_with_the_registry_hyperparameters() -> None:
    check_learner(SimpleShot, **REGISTRY_HP)


@pytest.mark.filterwarnings("ignore:simpleshot")  # the suite's one-class first experience: no base training
@pytest.mark.parametrize("hp", [TRAINED_HP, {**TRAINED_HP, "optimizer": "adam", "lr": 1e-3, "transductive": True},
                                {**TRAINED_HP, "transductive": True, "transductive_classes": "novel"}])
def test_conformance_with_base_training(hp) -> None:
    """Every check but `merge` (independently trained encoders / base means cannot merge: a ClbenchError)."""
    for name, check in learner_checks(SimpleShot, **hp):
        if name != "merge":
            check()
