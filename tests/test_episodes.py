"""Few-shot episodes: sampling, the episode loop, restore, and the confidence interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clbench import Learner, leaderboard, metrics, runner
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.protocols.episodes import episodic_stream, sample_episodes
from clbench.scenario import Scenario, ScenarioSpec
from clbench.datasets import Dataset, LabeledArrays

LABELS = np.repeat(np.arange(10, 16), 8)  # 6 held-out classes x 8 images


def test_episodes_are_fixed_and_well_formed():
    a = sample_episodes(LABELS, way=3, shot=2, query=4, n=20, seed=7)
    b = sample_episodes(LABELS, way=3, shot=2, query=4, n=20, seed=7)
    assert all(x.classes == y.classes and np.array_equal(x.support, y.support) for x, y in zip(a, b))
    for e in a:
        assert len(set(e.classes)) == 3 and len(e.support) == 6 and len(e.query) == 12
        assert not set(e.support) & set(e.query)
        assert set(LABELS[e.support]) == set(LABELS[e.query]) == set(e.classes)
        # support is grouped class by class, shot images each
        assert list(LABELS[e.support]) == [c for c in e.classes for _ in range(2)]
    assert len({e.classes for e in a}) > 1


@pytest.mark.parametrize("kwargs,match", [
    ({"way": 7}, "7-way episode needs 7 classes; the evaluation classes number 6"),
    ({"shot": 5, "query": 4}, "shot \\+ query = 9 images per class, but class 10 has only 8"),
])
def test_impossible_episodes_are_one_line(kwargs, match):
    with pytest.raises(ClbenchError, match=match):
        sample_episodes(LABELS, **{"way": 3, "shot": 1, "query": 1, "n": 2, **kwargs})


def test_episode_classes_must_be_held_out():
    with pytest.raises(ClbenchError, match="held out"):
        episodic_stream(np.array([0, 1, 10]), LABELS, 2, 1, 1, 3)


def _episodic_scenario(n_episodes=30, **spec):
    rng = np.random.default_rng(0)
    labels = {"train": np.repeat(np.arange(4), 10), "test": np.repeat(np.arange(4, 8), 10)}
    parts = {k: LabeledArrays((v[:, None, None, None] * 30 + rng.integers(0, 8, (len(v), 1, 4, 4))).astype(np.uint8),
                              v, tuple(f"c{i}" for i in range(8))) for k, v in labels.items()}
    dataset = Dataset("toy", parts)
    spec = ScenarioSpec(name="toy-episodes", dataset="toy", protocol="episodes", n_experiences=1, batch_size=8,
                        way=3, shot=2, query=3, test_episodes=n_episodes, **spec)
    stream = episodic_stream(labels["train"], labels["test"], 3, 2, 3, n_episodes)
    return Scenario(spec, dataset, stream)


def test_nmc_episodes_and_the_row():
    scenario = _episodic_scenario()
    result = runner.run(scenario, get_learner("nmc"), progress=False)
    assert len(result.episode_accuracies) == 30 and min(result.episode_accuracies) == 100.0  # well separated
    row = leaderboard.make_row(result, scenario, "features")
    assert row["fewshot_accuracy"] == 100.0 and row["fewshot_ci95"] == 0.0
    assert result.accuracy_matrix == [[100.0]]


def test_confidence_interval_matches_a_hand_computation():
    acc = [40.0, 60.0, 80.0, 100.0, 60.0]
    mean, ci = metrics.fewshot_summary(acc)
    std = math.sqrt(sum((a - 68.0) ** 2 for a in acc) / 5)
    assert mean == 68.0 and ci == pytest.approx(1.96 * std / math.sqrt(5))


class Drifts(Learner):
    """Changes its state in learn; predict depends on the state: an episode must leave no trace."""

    name = "drifts"
    wants = "features"

    def __init__(self, context):
        super().__init__(context)
        self.bias = torch.zeros(context.num_classes)
        self.seen_states = []

    def learn(self, x, y, task):
        self.seen_states.append(self.bias.clone())
        self.bias.index_add_(0, y, torch.ones(len(y)))

    def predict(self, x, task):
        return self.bias.expand(len(x), -1).clone()

    def state_dict(self):
        return {"bias": self.bias}

    def load_state_dict(self, state):
        self.bias.copy_(state["bias"])


def test_every_episode_starts_from_the_same_state():
    scenario = _episodic_scenario(n_episodes=10)
    states = []
    original = Drifts.learn
    Drifts.learn = lambda self, x, y, task: (states.append(self.bias.clone()), original(self, x, y, task))[1]
    try:
        runner.run(scenario, Drifts, progress=False)
    finally:
        Drifts.learn = original
    after_meta_training = states[5]  # 40 training samples in batches of 8 -> 5 learn calls
    assert all(torch.equal(s, after_meta_training) for s in states[5:])


def test_encoding_learners_encode_each_test_image_once():
    class Encodes(Learner):
        name = "encodes"
        encoded = 0

        def __init__(self, context):
            super().__init__(context)
            self.sums = torch.zeros(context.num_classes, 16)
            self.counts = torch.zeros(context.num_classes)

        def encode(self, x):
            Encodes.encoded += len(x)
            return x.flatten(1)

        def learn(self, x, y, task):
            z = x if x.dim() == 2 else self.encode(x)
            self.sums.index_add_(0, y, z)
            self.counts.index_add_(0, y, torch.ones(len(y)))

        def predict(self, x, task):
            return -torch.cdist(x if x.dim() == 2 else self.encode(x), self.sums / self.counts.clamp(min=1)[:, None])

        def episodic_state(self):
            return {"sums": self.sums, "counts": self.counts}

        def load_episodic_state(self, state):
            self.sums.copy_(state["sums"])
            self.counts.copy_(state["counts"])

    scenario = _episodic_scenario(n_episodes=50)
    seen = {}
    Encodes.end_experience = lambda self, info: seen.setdefault("after_training", Encodes.encoded)
    result = runner.run(scenario, Encodes, progress=False)
    assert min(result.episode_accuracies) == 100.0
    # 50 episodes x 15 images each, but every one of the 40 test images is encoded at most once
    assert 0 < Encodes.encoded - seen["after_training"] <= 40


def test_meta_training_without_test_images_never_asks_for_an_empty_prediction():
    """The meta-training experience holds no test images: predict() is never called on an empty batch
    (an mlp backbone, for one, cannot take one)."""

    class NoEmptyBatches(Learner):
        name = "no-empty-batches"
        wants = "features"

        def learn(self, x, y, task):
            pass

        def predict(self, x, task):
            assert len(x) > 0, "predict() called on an empty batch"
            return torch.zeros(len(x), self.context.num_classes)

    result = runner.run(_episodic_scenario(n_episodes=3), NoEmptyBatches, {}, seed=0, device="cpu", progress=False)
    assert len(result.episode_accuracies) == 3
