"""The learner conformance suite: every registered learner passes it, and each check fails, with its
own name, on a learner broken in the way that check is there to catch."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from clbench.learner import ExperienceInfo, Learner, available_learners, get_learner
from clbench.learners.finetune import Finetune
from clbench.learners.nmc import NMC
from clbench.testing import CHECKS, LearnerCheckFailed, check_learner, learner_checks


# Learners that train an encoder on their first experience merge only learners with the same
# encoder; the merge check trains each on its own data, so they run it with training off.
# kv-bottleneck: key_dim 1 fits the check's 1-dimensional features; a small bottleneck for speed.
REGISTRY_HYPERPARAMETERS = {"protonet": {"episodes": 0}, "simpleshot": {"epochs": 0, "transform": "l2"},
                            "kv-bottleneck": {"key_dim": 1, "codebooks": 32, "keys": 16}}


# Learners whose backbone must have BatchNorm layers (adab2n swaps them) get the small CNN instead of
# the harness's MLP.
REGISTRY_BACKBONES = {"adab2n": "small_cnn"}


def _registry_cases() -> list[Any]:
    return [pytest.param(name, check, id=f"{name}-{check_name}")
            for name in available_learners()
            for check_name, check in learner_checks(get_learner(name), **REGISTRY_HYPERPARAMETERS.get(name, {}))]


@pytest.mark.parametrize("name,check", _registry_cases())
def test_registered_learner_conforms(name, check, monkeypatch) -> None:
    if name in REGISTRY_BACKBONES:
        from clbench import testing
        from clbench.backbones import BackboneFactory

        monkeypatch.setattr(testing, "backbone_factory",
                            lambda _, shape, *args: BackboneFactory(REGISTRY_BACKBONES[name], shape, *args))
    check()


# ---- a well-behaved plugin that uses every optional part of the contract ---------------------------
class FederatedNMC(NMC):
    """NMC with integer task ids, an order-independent merge and a small episodic state."""

    name = "federated_nmc"
    needs_task_ids = True


@pytest.mark.parametrize("name,check", learner_checks(FederatedNMC))
def test_optional_contract_conforms(name: str, check) -> None:
    check()


def test_every_check_applies_to_a_learner_with_every_capability() -> None:
    assert [name for name, _ in learner_checks(FederatedNMC)] == list(CHECKS)


def test_check_learner_passes_hyperparameters() -> None:
    check_learner(NMC, l2_normalize=True)
    with pytest.raises(LearnerCheckFailed, match="^predict_shape: constructing .*'l2_normalize'"):
        check_learner(NMC, l2_normalize="sometimes")


def test_not_a_learner_is_rejected() -> None:
    with pytest.raises(LearnerCheckFailed, match="^class_attributes: .*not a subclass"):
        learner_checks(dict)


# ---- deliberately broken learners: one per way of breaking the contract ----------------------------
class BadWants(NMC):
    name, wants = "bad_wants", "pixels"


class MergeableWithoutMerge(Finetune):
    name, mergeable = "mergeable_without_merge", True


class WrongShape(NMC):
    name = "wrong_shape"

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        return super().predict(x, task)[:, 1:]  # drops class 0


class NaNForUnseen(NMC):
    name = "nan_for_unseen"

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        return super().predict(x, task).masked_fill(self.memory.counts == 0, float("nan"))


class CentresInPlace(NMC):
    name = "centres_in_place"

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        return super().predict(x.sub_(x.mean()), task)


class FrozenAfterFirstExperience(NMC):
    name = "frozen_after_first_experience"

    def begin_experience(self, info: ExperienceInfo) -> None:
        self.frozen = info.index > 0

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if not self.frozen:
            super().learn(x, y, task)


class ForgetsCounts(NMC):
    name = "forgets_counts"

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.memory.sums.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.sums.copy_(state["sums"])


@dataclass
class _Meta:
    seen: int


class PickledMetadata(NMC):
    name = "pickled_metadata"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "meta": _Meta(int(self.memory.counts.sum()))}


class EntropyJitter(NMC):
    name = "entropy_jitter"

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        scores = super().predict(x, task)
        rng = torch.Generator().manual_seed(secrets.randbits(32))  # tie-breaking noise from OS entropy
        return scores + 1e-3 * torch.rand(scores.shape, generator=rng)


class BatchStandardised(NMC):
    name = "batch_standardised"

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        super().learn((x - x.mean(0)) / x.std(0, correction=0), y, task)  # 0 / 0 for a batch of one


class BranchesOnTask(NMC):
    name = "branches_on_task"

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if task:  # a "task-free" learner that quietly uses task ids when given
            self.last_task = task
        super().learn(x, y, task)


class SwallowsTaskErrors(NMC):
    name = "swallows_task_errors"

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        try:
            self.head = int(task)
        except Exception:
            self.head = 0
        return super().predict(x, task)


class TaskAsTensor(NMC):
    name, needs_task_ids = "task_as_tensor", True

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        self.head = task.item()  # expects a tensor, the runner gives an int
        super().learn(x, y, task)


class SixteenFeatures(NMC):
    name = "sixteen_features"

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return super()._features(x.reshape(len(x), 16))


class LastOneWins(FederatedNMC):
    name = "last_one_wins"

    def merge(self, others: list[Learner]) -> None:
        self.load_state_dict(others[-1].state_dict())


class AveragesMeans(FederatedNMC):
    name = "averages_means"

    def merge(self, others: list[Learner]) -> None:
        learners = [self, *others]
        means = torch.stack([lr.memory.sums / lr.memory.counts.clamp(min=1).unsqueeze(1) for lr in learners]).mean(0)
        self.memory.counts.copy_(torch.stack([lr.memory.counts for lr in learners]).amax(0).clamp(max=1))
        self.memory.sums.copy_(means * self.memory.counts.unsqueeze(1))


class Unvalidated(NMC):
    name = "unvalidated"


def _unvalidated_init(self: Learner, context: Any, **hyperparameters: Any) -> None:
    self.config = dict(hyperparameters)  # set after class creation: bypasses Learner's validation
    NMC.__init__(self, context)


Unvalidated.__init__ = _unvalidated_init


class IncompleteEpisodicState(FederatedNMC):
    name = "incomplete_episodic_state"

    def episodic_state(self) -> dict[str, Any]:
        return {"sums": self.memory.sums.clone()}

    def load_episodic_state(self, state: dict[str, Any]) -> None:
        self.memory.sums.copy_(state["sums"])


class FinetuneWithoutOptimizerState(Finetune):
    name = "finetune_without_optimizer_state"

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


class ReturnsATuple(NMC):
    name = "returns_a_tuple"

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> Any:
        super().learn(x, y, task)
        return torch.tensor(0.5), self.predict(x, task)  # (loss, scores), not clbench.Step(loss, scores)


BROKEN = [
    (BadWants, "class_attributes", "wants"),
    (MergeableWithoutMerge, "class_attributes", "`merge` is not implemented"),
    (WrongShape, "predict_shape", "shape (1, 4)"),
    (NaNForUnseen, "predict_shape", "non-finite"),
    (CentresInPlace, "predict_shape", "modified its input"),
    (ReturnsATuple, "learn_returns", "learn() returned tuple as its loss; expected None"),
    (FrozenAfterFirstExperience, "learns_new_classes", "accuracy on those classes is 25%"),
    (ForgetsCounts, "state_roundtrip", "predicts differently"),
    (PickledMetadata, "state_roundtrip", "weights_only"),
    (EntropyJitter, "deterministic", "different scores"),
    (BatchStandardised, "online_single_pass", "non-finite"),
    (BranchesOnTask, "task_ids", "__bool__ on the task given to learn()"),
    (SwallowsTaskErrors, "task_ids", "__int__ on the task given to predict()"),
    (TaskAsTensor, "task_ids", "integer task ids 0 and 1: learn() raised AttributeError"),
    (SixteenFeatures, "accepts_features", "with 1-dimensional features"),
    (LastOneWins, "merge", "A.merge([B, C]) and A.merge([C, B])"),
    (AveragesMeans, "merge", "untrained learner"),
    (Unvalidated, "hyperparameters", "unknown keyword 'no_such_hyperparameter' was accepted"),
    (IncompleteEpisodicState, "episode_restore", "load_episodic_state() of the episodic_state()"),
    (FinetuneWithoutOptimizerState, "state_complete", "optimizer state (momentum, Adam moments, lr schedules)"),
]


@pytest.mark.parametrize("cls,check,reason", BROKEN, ids=[cls.__name__ for cls, _, _ in BROKEN])
def test_broken_learner_fails_its_check(cls: type[Learner], check: str, reason: str) -> None:
    with pytest.raises(LearnerCheckFailed, match=rf"^{check}: (?s:.*){re.escape(reason)}"):
        dict(learner_checks(cls))[check]()


def test_episode_restore_blames_the_snapshot_that_is_incomplete() -> None:
    with pytest.raises(LearnerCheckFailed, match=r"^episode_restore: .*restored state_dict\(\) gave different "
                                                 r"predictions: state that learn\(\) uses is missing from state_dict"):
        dict(learner_checks(FinetuneWithoutOptimizerState))["episode_restore"]()


def test_check_learner_reports_missing_optimizer_state_as_incomplete_state() -> None:
    with pytest.raises(LearnerCheckFailed, match=r"^state_complete: .*belong in state_dict\(\)"):
        check_learner(FinetuneWithoutOptimizerState)


def test_every_check_is_shown_to_fail() -> None:
    assert {check for _, check, _ in BROKEN} == set(CHECKS)


def test_readme_plugin_passes_the_conformance_suite(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme.split("## Writing your own learner", 1)[1], re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "my_learner.py", "exec"), namespace)
    check_learner(namespace["LinearProbe"], lr=0.05)
