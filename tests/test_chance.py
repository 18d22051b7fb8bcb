"""The chance level of each protocol's headline: 100 / the classes a guess chooses among, checked
against the streams themselves, recorded in every row and derived for rows that lack it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clbench import leaderboard, runner
from clbench.chance import DATASET_CLASSES, chance_accuracy, derived_chance
from clbench.datasets import load_dataset
from clbench.learner import get_learner
from clbench.protocols.federated import federated_stream
from clbench.scenario import ScenarioSpec
from synthetic import make_scenario


@pytest.mark.parametrize("task_incremental", [False, True])
def test_class_and_task_incremental_match_their_streams(task_incremental):
    scenario = make_scenario(n_classes=6, n_experiences=3, task_incremental=task_incremental)
    stream = scenario.stream
    if task_incremental:  # scored among the evaluated experience's classes: 2 of them
        truth = np.mean([100 / len(e.classes) for e in stream.experiences])
    else:  # scored among every class seen by the end: 6
        truth = 100 / len({c for e in stream.experiences for c in e.classes})
    assert chance_accuracy(scenario.spec, scenario.dataset.num_classes) == pytest.approx(truth)
    assert truth == (50.0 if task_incremental else 100 / 6)


def test_federated_counts_the_base_and_every_mission_s_classes():
    labels = np.repeat(np.arange(10), 3)
    stream = federated_stream(labels, labels, tuple(range(10)), 4, 1, 2, 2, 2, 0)
    spec = ScenarioSpec(name="f", protocol="federated", n_experiences=2, n_base_classes=4, clients=2,
                        classes_per_client=2, client_shots=2)
    assert chance_accuracy(spec, 10) == 100 / len(stream.class_order) == 12.5


def test_episodes_are_one_in_way():
    assert chance_accuracy(ScenarioSpec(name="e", protocol="episodes", n_experiences=1, way=5), 100) == 20.0


def test_every_row_records_its_chance_level():
    scenario = make_scenario(task_incremental=True)  # 4 classes, 2 tasks of 2
    row = leaderboard.make_row(runner.run(scenario, get_learner("nmc"), progress=False), scenario, "features")
    assert row["chance_accuracy"] == 50.0


@pytest.mark.parametrize("scenario, overrides, expected", [
    ("split-digits", {}, 10.0), ("split-digits-til", {}, 50.0), ("split-digits", {"n_experiences": 2}, 10.0),
    ("split-digits-til", {"n_experiences": 2}, 20.0), ("miniimagenet-fscil", {"epochs": 2}, 1.0),
    ("miniimagenet-5way-1shot", {}, 20.0), ("miniimagenet-fedrecon", {}, 1.0), ("split-cifar100-til", {}, 10.0),
    ("core50-nc", {"level": "category"}, 10.0), ("core50-ni", {}, 2.0),
    ("my-own-spec", {}, math.nan), ("split-digits", {"no_such_setting": 1}, math.nan),
])
def test_rows_without_it_get_it_from_their_spec(scenario, overrides, expected):
    found = derived_chance(scenario, json.dumps(overrides))
    assert (math.isnan(found) and math.isnan(expected)) or found == pytest.approx(expected)


def test_the_class_count_of_the_embedded_dataset_is_its_loader_s():
    assert DATASET_CLASSES["digits"] == load_dataset("digits").num_classes
