"""Federated reconnaissance: missions of clients, merged into the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clbench import Learner, leaderboard, runner
from clbench.datasets import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.protocols.federated import federated_stream
from clbench.scenario import Scenario, ScenarioSpec


class MeanMerger(Learner):
    """Class means from feature sums and counts; merges client-local deltas since their last load."""

    name = "mean-merger"
    wants = "features"
    mergeable = True

    def __init__(self, context):
        super().__init__(context)
        self.sums = torch.zeros(context.num_classes, context.feature_dim, dtype=torch.float64)
        self.counts = torch.zeros(context.num_classes, dtype=torch.float64)
        self.origin = (self.sums.clone(), self.counts.clone())

    def learn(self, x, y, task):
        self.sums.index_add_(0, y, x.double())
        self.counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))

    def predict(self, x, task):
        means = self.sums / self.counts.clamp(min=1)[:, None]
        return (-torch.cdist(x.double(), means)).float().masked_fill(self.counts == 0, -3e38)

    def state_dict(self):
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state):
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
        self.origin = (self.sums.clone(), self.counts.clone())

    def merge(self, others):
        for other in others:
            self.sums += other.sums - other.origin[0]
            self.counts += other.counts - other.origin[1]


def _scenario(**kwargs):
    rng = np.random.default_rng(0)
    n_classes = 12
    labels = {"train": np.repeat(np.arange(n_classes), 6), "test": np.repeat(np.arange(n_classes), 2)}
    parts = {k: LabeledArrays((v[:, None, None, None] * 20 + rng.integers(0, 6, (len(v), 1, 3, 3))).astype(np.uint8),
                              v, tuple(map(str, range(n_classes)))) for k, v in labels.items()}
    settings = dict(n_base_classes=4, clients=2, classes_per_client=2, client_shots=3, n_experiences=3)
    settings.update(kwargs)
    spec = ScenarioSpec(name="toy-fed", dataset="toy", protocol="federated", batch_size=4, **settings)
    stream = federated_stream(labels["train"], labels["test"], tuple(range(n_classes)), spec.n_base_classes,
                              spec.n_experiences - 1, spec.clients, spec.classes_per_client, spec.client_shots)
    return Scenario(spec, Dataset("toy", parts), stream)


def test_stream_layout():
    stream = _scenario().stream
    assert [e.classes for e in stream.experiences] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    assert [[c.classes for c in m] for m in stream.clients] == [[], [(4, 5), (6, 7)], [(8, 9), (10, 11)]]
    assert all(len(c.train_indices) == 6 for m in stream.clients for c in m)  # 2 classes x 3 shots


def test_merged_server_equals_one_learner_that_saw_all_client_data():
    scenario = _scenario()
    result = runner.run(scenario, MeanMerger, progress=False)
    assert len(result.client_accuracies) == 2 and all(len(m) == 2 for m in result.client_accuracies)
    # the same data given to one learner, experience by experience (no clients, no merge)
    single = Scenario(scenario.spec, scenario.dataset, type(scenario.stream)(
        "class-incremental", scenario.stream.class_order, scenario.stream.experiences, mask="seen"))
    assert runner.run(single, MeanMerger, progress=False).accuracy_matrix == result.accuracy_matrix
    row = leaderboard.make_row(result, scenario, "features")
    assert row["client_accuracy"].startswith("[[")


def test_needs_a_mergeable_learner():
    with pytest.raises(ClbenchError, match="learner 'finetune' cannot merge"):
        runner.run(_scenario(), get_learner("finetune"), progress=False)


def test_impossible_federation_is_one_line():
    with pytest.raises(ClbenchError, match="needs 16 classes"):
        _scenario(n_experiences=4)
    with pytest.raises(ClbenchError, match="each client needs 7"):
        _scenario(client_shots=7)
