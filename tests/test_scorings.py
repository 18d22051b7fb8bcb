"""Class-IL and Task-IL accuracy from one run (issue 23): a class-incremental run also reports Task-IL
(its own scores masked to each experience's classes, no extra pass), a task-incremental run also
reports Class-IL (predict without the task id, masked to the classes seen so far)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from clbench import Learner, leaderboard, runner
from clbench.learner import get_learner
from clbench.scenario import build_scenario, load_spec
from synthetic import make_scenario
from test_evaluation_future import _domain_incremental

pytestmark = pytest.mark.usefixtures("single_thread")


class TaskAware(Learner):
    """Without a task id it answers the highest class it is allowed (scores 0, 1, ..., C-1); with one,
    the lowest (scores C-1, ..., 0). Records every task id predict is given."""

    name = "task-aware"
    tasks: list = []

    def learn(self, x, y, task):
        pass

    def predict(self, x, task):
        TaskAware.tasks.append(task)
        scores = torch.arange(self.context.num_classes, dtype=torch.float32)
        return (scores if task is None else -scores).expand(len(x), -1)


def _scenario(task_incremental: bool):
    """6 classes in 3 experiences (0, 1 | 2, 3 | 4, 5), 2 test images per class."""
    return make_scenario(n_classes=6, n_experiences=3, test_per_class=2, task_incremental=task_incremental)


def test_a_class_incremental_run_reads_task_il_from_its_own_scores():
    TaskAware.tasks.clear()
    result = runner.run(_scenario(False), TaskAware, device="cpu", progress=False)
    assert set(TaskAware.tasks) == {None}  # predict was never given a task id
    # after experience i it answers class 2i+1 (the highest seen): right on half of experience i only
    assert result.accuracy_matrix == result.class_il_matrix == [[50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 50.0]]
    # masked to experience j's classes it answers 2j+1: right on half of each; the future is not scored
    assert result.task_il_matrix == [[50.0, None, None], [50.0, 50.0, None], [50.0, 50.0, 50.0]]
    row = leaderboard.make_row(result, _scenario(False), "images")
    assert json.loads(row["task_il_matrix"]) == result.task_il_matrix
    assert row["final_task_il_accuracy"] == 50.0 and row["final_class_il_accuracy"] == row["final_accuracy"]


def test_a_task_incremental_run_adds_a_pass_without_task_ids():
    TaskAware.tasks.clear()
    result = runner.run(_scenario(True), TaskAware, device="cpu", progress=False)
    # with its task id it answers the lowest class of the task: half right everywhere, untrained included
    assert result.accuracy_matrix == result.task_il_matrix == [[50.0] * 3] * 3
    # without it, the highest class seen so far: as in the class-incremental run (nothing of the future)
    assert result.class_il_matrix == [[50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 50.0]]
    assert TaskAware.tasks.count(None) == 3  # one pass per evaluation after training, none for the untrained one
    row = leaderboard.make_row(result, _scenario(True), "images")
    assert row["final_class_il_accuracy"] == round(50 / 3, 4) and row["final_task_il_accuracy"] == 50.0


def test_the_two_runs_agree_for_a_learner_that_ignores_task_ids():
    """NMC (no task ids, the same training either way) on the real split-digits streams: each run's second
    scoring is the other run's first, and Task-IL is at least Class-IL cell by cell."""
    nmc = get_learner("nmc")
    cil = runner.run(build_scenario(load_spec("split-digits")), nmc, device="cpu", progress=False)
    til = runner.run(build_scenario(load_spec("split-digits-til")), nmc, device="cpu", progress=False)
    assert cil.class_il_matrix == til.class_il_matrix
    assert all(cil.task_il_matrix[i][: i + 1] == til.task_il_matrix[i][: i + 1] for i in range(5))
    cells = [(c, t) for i in range(5) for c, t in zip(cil.class_il_matrix[i][: i + 1], cil.task_il_matrix[i][: i + 1])]
    assert all(t >= c for c, t in cells) and any(t > c for c, t in cells)  # and not a trivial 100 everywhere


def test_protocols_without_both_notions_record_neither():
    result = runner.run(_domain_incremental(), TaskAware, device="cpu", progress=False)
    assert result.class_il_matrix is None and result.task_il_matrix is None
    row = leaderboard.make_row(result, _domain_incremental(), "images")
    assert row["class_il_matrix"] == row["task_il_matrix"] == "null"
    assert math.isnan(row["final_class_il_accuracy"]) and math.isnan(row["final_task_il_accuracy"])
