"""Evaluation never shows a learner test images of classes it has not been trained on (issue 10 §6):
every predict() call holds test images of trained classes only, or images of one not-yet-trained
experience scored on its own. So accuracy on the classes learned so far cannot depend on the test
images of the future, even for a transductive learner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clbench import Learner, runner
from clbench.datasets import Dataset, LabeledArrays
from clbench.inputs import Inputs
from clbench.learner import available_learners, get_learner
from clbench.protocols import Experience, Stream, split_by_class
from clbench.scenario import Scenario
from synthetic import make_scenario

pytestmark = pytest.mark.usefixtures("single_thread")

N_CLASSES, N_EXPERIENCES = 6, 3
SMALL = {  # hyper-parameters that keep each learner tiny (and simpleshot transductive: the case that matters)
    "replay": {"buffer_size": 8}, "adab2n": {"buffer_size": 8},
    "protonet": {"episodes": 3, "train_way": 2, "train_shot": 1, "train_query": 1},
    "simpleshot": {"transductive": True},
    "kv-bottleneck": {"codebooks": 8, "keys": 16, "key_dim": 2},
    "hnet": {"target_hidden": [8], "chunk_size": 64}, "hnet-features": {"target_hidden": [8], "chunk_size": 64},
}
SETTINGS = {"adab2n": {"backbone": "small_cnn"}}  # AdaB²N swaps batch norms: a backbone that has them
LEARNERS = {name: SMALL.get(name, {}) for name in available_learners()}  # every registered learner


def _rebuilt(base: Scenario, images: np.ndarray, labels: np.ndarray, drop_from: int | None = None) -> Scenario:
    """`base` with another test partition; experiences from `drop_from` on lose their test data."""
    train = base.dataset.partition("train")
    dataset = Dataset(base.dataset.name, {"train": train, "test": LabeledArrays(images, labels, train.class_names)})
    stream = split_by_class(train.labels, labels, tuple(range(N_CLASSES)), N_EXPERIENCES)
    if drop_from is not None:
        stream = dataclasses.replace(stream, experiences=tuple(
            e if e.index < drop_from else dataclasses.replace(e, test_indices=np.zeros(0, dtype=np.int64))
            for e in stream.experiences))
    return Scenario(base.spec, dataset, stream)


def _variants(base: Scenario, trained: int) -> dict[str, Scenario]:
    """The test images of the classes after experience `trained`: removed, replaced, permuted."""
    test = base.dataset.partition("test")
    images, labels = test.images.copy(), test.labels.copy()
    unseen = np.flatnonzero(labels >= 2 * (trained + 1))  # 2 classes per experience
    replaced = images.copy()
    replaced[unseen] = 255 - replaced[unseen]
    order = np.arange(len(labels))
    order[unseen] = unseen[np.random.default_rng(1).permutation(len(unseen))]
    return {"removed": _rebuilt(base, images, labels, drop_from=trained + 1),
            "replaced": _rebuilt(base, replaced, labels),
            "permuted": _rebuilt(base, images[order], labels[order])}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_seen_class_accuracy_does_not_depend_on_unseen_test_images(name):
    base = make_scenario(n_classes=N_CLASSES, n_experiences=N_EXPERIENCES, per_class=6, test_per_class=4,
                         **SETTINGS.get(name, {}))
    cls, config = get_learner(name), LEARNERS[name]
    reference = runner.run(base, cls, config, seed=0, device="cpu", progress=False).accuracy_matrix
    for trained in range(N_EXPERIENCES - 1):
        for variant, scenario in _variants(base, trained).items():
            matrix = runner.run(scenario, cls, config, seed=0, device="cpu", progress=False).accuracy_matrix
            for i in range(trained + 1):
                assert matrix[i][: i + 1] == reference[i][: i + 1], (variant, trained, i)


# ---- the rule itself, call by call, for every kind of evaluation ---------------------------------------------
BATCHES: list[torch.Tensor] = []  # test rows of every batch the runner builds, in order
LABELS = torch.zeros(0)  # the test partition's labels


class Witness(Learner):
    """Remembers which classes it has learned (in its state, so merges, restores and episodes carry it);
    each predict() call records the labels it is shown and what was learned at that moment."""

    name, wants, mergeable, online = "witness", "features", True, True
    calls: list[tuple[set[int], set[int], set[int]]] = []  # (labels shown, classes learned, rows shown)

    def __init__(self, context) -> None:
        super().__init__(context)
        self.learned = torch.zeros(context.num_classes, dtype=torch.bool)

    def learn(self, x, y, task):
        self.learned[y] = True

    def predict(self, x, task):
        rows = BATCHES[-1]
        Witness.calls.append((set(LABELS[rows].tolist()), set(torch.nonzero(self.learned).flatten().tolist()),
                              set(rows.tolist())))
        return torch.zeros(len(x), self.context.num_classes)

    def state_dict(self):
        return {"learned": self.learned.clone()}

    def load_state_dict(self, state):
        self.learned = state["learned"].clone()

    def merge(self, others):
        for other in others:
            self.learned |= other.learned



@pytest.fixture
def witness(monkeypatch):
    original = Inputs.batch

    def recording(self, part, index, augment=False):
        global LABELS
        if part == "test":
            LABELS = self.y_test.cpu()
            BATCHES.append(index.cpu())
        return original(self, part, index, augment)

    monkeypatch.setattr(Inputs, "batch", recording)
    Witness.calls.clear()
    yield Witness.calls
    BATCHES.clear()


def _domain_incremental() -> Scenario:
    """Like CoRe50 NI with sessions that lack classes: every experience is tested on the whole test set."""
    base = make_scenario(n_classes=N_CLASSES, n_experiences=N_EXPERIENCES)
    exps = tuple(Experience(e.index, e.classes, e.train_indices, np.arange(len(base.dataset.partition("test").labels)))
                 for e in base.stream.experiences)
    return Scenario(base.spec, base.dataset, Stream("core50-ni", base.stream.class_order, exps, mask="all"))


def _federated() -> Scenario:
    from test_federated import _scenario
    return _scenario()


def _episodes() -> Scenario:
    from test_episodes import _episodic_scenario
    return _episodic_scenario(n_episodes=5)


@pytest.mark.parametrize("build", [
    lambda: make_scenario(n_classes=N_CLASSES, n_experiences=N_EXPERIENCES),
    lambda: make_scenario(n_classes=N_CLASSES, n_experiences=N_EXPERIENCES, task_incremental=True),
    _domain_incremental, _federated, _episodes,
], ids=["class-incremental", "task-incremental", "domain-incremental", "federated", "episodes"])
def test_every_predict_call_holds_trained_classes_or_one_untrained_experience(witness, build):
    scenario = build()
    runner.run(scenario, Witness, device="cpu", progress=False)
    test_sets = [set(e.test_indices.tolist()) for e in scenario.stream.experiences]
    assert witness
    for shown, learned, rows in witness:
        if not shown <= learned:  # then: none of its classes learned, all of one experience's test set
            assert not shown & learned and any(rows <= test_set for test_set in test_sets), (shown, learned)
    if scenario.stream.mask == "seen":  # class-incremental, federated, episodes: the future is never scored
        assert all(shown <= learned for shown, learned, _ in witness)
