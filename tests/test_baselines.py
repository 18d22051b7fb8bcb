"""The recipes in baselines/ load and cover every shipped scenario with cited references, and the
built-in bounds behave as the literature says, on the embedded split-digits scenario."""

import sys
from pathlib import Path

import pytest
import torch

from clbench import runner
from clbench.learner import get_learner
from clbench.metrics import summary
from clbench.recipes import load_jobs, recipe_files
from clbench.scenario import available_scenarios, build_scenario, load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BASELINES = Path(__file__).resolve().parents[1] / "baselines"


@pytest.fixture(scope="module")
def recipe_jobs():
    return load_jobs(BASELINES)  # a bad recipe, setting, hyper-parameter or reference raises


def test_every_recipe_loads_and_validates(recipe_jobs):
    assert len({job.recipe for job in recipe_jobs}) == len(recipe_files(BASELINES))


def test_every_shipped_scenario_has_a_recipe(recipe_jobs):
    covered = {job.key[0] for job in recipe_jobs}
    assert sorted(set(available_scenarios()) - covered) == []


def test_every_reference_is_a_table_naming_a_metric():
    """Each reference is a [reference] table, not a bare string, whose metric is a leaderboard figure
    (`load_jobs` checks it is one of the scenario's protocol); recipes without one are "none" in the README."""
    from clbench.leaderboard import FIGURE_COLUMNS

    for recipe, file in recipe_files(BASELINES).items():
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
        if "reference" in raw:
            assert isinstance(raw["reference"], dict) and raw["reference"]["metric"] in FIGURE_COLUMNS, recipe


def test_the_readme_lists_every_recipe():
    text = (BASELINES / "README.md").read_text(encoding="utf-8")
    assert [recipe for recipe in recipe_files(BASELINES) if f"`{recipe}`" not in text] == []


@pytest.fixture(scope="module")
def digits():
    return build_scenario(load_spec("split-digits"))


@pytest.fixture(scope="module")
def results(digits):
    return {name: runner.run(digits, get_learner(name), seed=0, progress=False) for name in ("finetune", "joint", "nmc")}


def test_finetune_forgets_everything_but_the_last_experience(results):
    m = summary(results["finetune"].accuracy_matrix)
    last = results["finetune"].accuracy_matrix[-1]
    assert m["final_accuracy"] == pytest.approx(20, abs=5)  # only the last 2 of 10 classes are answered
    assert max(last[:-1]) < 5 and last[-1] > 90
    assert m["forgetting"] > 90


def test_joint_does_not_forget(results):
    m = summary(results["joint"].accuracy_matrix)
    assert m["final_accuracy"] > 93 and m["forgetting"] < 3


def test_nmc_does_not_forget(results, digits):
    m = summary(results["nmc"].accuracy_matrix)
    assert m["final_accuracy"] > 85 and m["forgetting"] < 8  # only interference from new classes


def test_nmc_class_means_never_change_after_their_experience(digits):
    nmc = get_learner("nmc")
    task_incremental = build_scenario(load_spec("split-digits-til"))
    result = runner.run(task_incremental, nmc, seed=0, progress=False)
    assert summary(result.accuracy_matrix)["forgetting"] == 0.0  # each column constant once learned
    assert all(len({row[j] for row in result.accuracy_matrix[j:]}) == 1 for j in range(5))


def test_nmc_means_match_a_hand_computation(digits):
    from clbench.learner import Context

    ctx = Context(torch.device("cpu"), num_classes=3, input_shape=(2,), seed=0, backbone=None)
    nmc = get_learner("nmc")(ctx)
    nmc.learn(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 0]), None)
    nmc.learn(torch.tensor([[0.0, 4.0]]), torch.tensor([2]), None)
    # means: class 0 at (1, 0), class 2 at (0, 4); class 1 never seen. Scores: -squared distance
    scores = nmc.predict(torch.tensor([[1.0, 1.0]]), None)
    assert scores[0, 0] == pytest.approx(-1.0)
    assert scores[0, 2] == pytest.approx(-(1 + 9))
    assert scores[0, 1] == torch.finfo(torch.float32).min
