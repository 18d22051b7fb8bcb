"""The online regime: every training sample exactly once in small batches, optionally task-free
(no begin/end_experience calls, no task at training), and the shipped online scenario specs."""

from __future__ import annotations

import pytest
import torch

from clbench import runner
from clbench.errors import ClbenchError
from clbench.learner import ExperienceInfo
from clbench.learners.nmc import NMC
from clbench.scenario import build_scenario, load_spec

pytestmark = pytest.mark.usefixtures("single_thread")


class Spy(NMC):
    """NMC on the raw pixels that records every call the runner makes."""

    name = "spy"
    needs_task_ids = False

    def __init__(self, context, **hyperparameters):
        super().__init__(context, **hyperparameters)
        self.calls, self.rows, self.tasks, self.batches = [], [], [], []

    def begin_experience(self, info: ExperienceInfo) -> None:
        self.calls.append("begin")

    def end_experience(self, info: ExperienceInfo) -> None:
        self.calls.append("end")

    def learn(self, x, y, task):
        self.rows.append(x.clone()), self.tasks.append(task), self.batches.append(len(x))
        super().learn(x, y, task)


def _run(spec_name: str, **overrides):
    spec = load_spec(spec_name).with_overrides(overrides) if overrides else load_spec(spec_name)
    scenario = build_scenario(spec)
    learners = []

    class Recorded(Spy):
        def __init__(self, context, **hyperparameters):
            super().__init__(context, **hyperparameters)
            learners.append(self)

    runner.run(scenario, Recorded, seed=0, progress=False, device="cpu")
    return scenario, learners[0]


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of x in lexicographic order (a multiset, comparable with torch.equal)."""
    for column in reversed(range(x.shape[1])):
        x = x[x[:, column].argsort(stable=True)]
    return x


def test_every_training_sample_is_shown_exactly_once_in_batches_of_ten():
    scenario, spy = _run("split-digits-online", encoder="flatten")
    shown = ((torch.cat(spy.rows) * 0.5 + 0.5) * 255).round().long()  # back to the pixels (mean = std = 0.5)
    expected = torch.as_tensor(scenario.dataset.partition("train").images).long().flatten(1)
    assert len(shown) == len(expected)  # no sample twice, none left out
    assert torch.equal(_sorted_rows(shown), _sorted_rows(expected))
    assert max(spy.batches) == 11 and sorted(set(spy.batches)) == [3, 6, 10, 11]  # a lone last sample joins its batch
    assert spy.calls == ["begin", "end"] * 5 and set(spy.tasks) == {None}


def test_task_free_gives_no_boundaries_and_no_task():
    _, spy = _run("split-digits-til", online=True, epochs=1, batch_size=10, task_boundaries=False)
    assert spy.calls == [] and set(spy.tasks) == {None}  # the TIL stream has task ids; training gets none
    _, told = _run("split-digits-til", online=True, epochs=1, batch_size=10)
    assert told.calls == ["begin", "end"] * 5 and set(told.tasks) == {0, 1, 2, 3, 4}


def test_a_learner_that_needs_task_ids_cannot_run_task_free():
    class NeedsTasks(Spy):
        name, needs_task_ids = "needs_tasks", True

    spec = load_spec("split-digits").with_overrides({"task_boundaries": False})
    with pytest.raises(ClbenchError, match="needs task ids at training; scenario 'split-digits' is task-free"):
        runner.run(build_scenario(spec), NeedsTasks, seed=0, progress=False, device="cpu")


@pytest.mark.parametrize("name,dataset,experiences,backbone", [
    ("split-digits-online", "digits", 5, "reduced_resnet18"),
    ("split-cifar100-online", "cifar100", 10, "reduced_resnet18_nf64"),
    ("split-miniimagenet-online", "mini-imagenet", 20, "reduced_resnet18_nf64"),
])
def test_online_specs(name, dataset, experiences, backbone):
    spec = load_spec(name)
    assert (spec.dataset, spec.n_experiences, spec.backbone) == (dataset, experiences, backbone)
    assert spec.online and spec.epochs == 1 and spec.batch_size == 10 and spec.protocol == "class-incremental"
    assert spec.augment == "none" and spec.task_boundaries


def test_online_needs_one_epoch():
    with pytest.raises(ClbenchError, match="epochs must be 1"):
        load_spec("split-digits-online").with_overrides({"epochs": 2})


def test_a_single_sample_remainder_joins_the_last_batch():
    from clbench.runner import batches

    order = torch.arange(21)
    assert [len(b) for b in batches(order, 10)] == [10, 11]
    assert [len(b) for b in batches(order, 7)] == [7, 7, 7]
    assert [len(b) for b in batches(torch.arange(1), 10)] == [1]
    assert torch.equal(torch.cat(batches(order, 10)), order)  # every sample exactly once, in order


def test_finetune_with_batch_norm_trains_online_when_a_batch_of_one_would_remain(tmp_path):
    from clbench.cli import main

    board = tmp_path / "board.csv"
    assert main(["run", "--scenario", "split-digits-online", "--learner", "finetune", "--set", "n_experiences=5",
                 "--no-progress", "--leaderboard", str(board)]) == 0
