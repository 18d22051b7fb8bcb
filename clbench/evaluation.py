"""Evaluation after each experience: batched passes over the test data, masking, accuracies."""

from __future__ import annotations

import time

import torch

from clbench.device import synchronize
from clbench.guard import LearnerFailed, guard
from clbench.inputs import Inputs
from clbench.learner import Learner
from clbench.scenario import Scenario


class Evaluator:
    """Scores the test data in batched passes, masks, and counts correct answers per experience.

    Where neither the task id nor the mask depends on the evaluated experience (class- and
    domain-incremental), the union of all test sets is scored once per evaluation and each
    experience's accuracy is read from it: overlapping test sets (CoRe50 NIC) cost nothing extra.
    """

    def __init__(self, scenario: Scenario, inputs: Inputs, learner: Learner) -> None:
        self.stream, self.inputs, self.learner = scenario.stream, inputs, learner
        self.batch_size = scenario.spec.eval_batch_size
        self.num_classes = scenario.dataset.num_classes
        self.device = inputs.y_test.device
        self.test_index = [torch.as_tensor(e.test_indices, device=self.device) for e in self.stream.experiences]
        self.shared_pass = not self.stream.task_ids_at_test and self.stream.mask != "task"
        self.union = torch.unique(torch.cat(self.test_index)) if self.test_index else torch.zeros(0)
        self.positions = [torch.searchsorted(self.union, index) for index in self.test_index]
        self.curve: list[float] = []
        self.seconds = 0.0

    def _mask(self, trained_through: int, evaluated: int) -> torch.Tensor:
        exps = self.stream.experiences
        if self.stream.mask == "seen":
            classes = [c for e in exps[: trained_through + 1] for c in e.classes]
        elif self.stream.mask == "task":
            classes = list(exps[evaluated].classes)
        else:
            classes = list(range(self.num_classes))
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        mask[classes] = True
        return mask

    def _correct(self, index: torch.Tensor, task: int | None, mask: torch.Tensor, trained_through: int,
                 learner: Learner | None = None) -> torch.Tensor:
        """Per-sample correctness (bool) of the masked prediction on test samples `index`."""
        learner = learner or self.learner
        right = []
        for chunk in index.split(self.batch_size):
            scores = guard(learner, "predict", trained_through, learner.predict, self.inputs.batch("test", chunk), task)
            if not isinstance(scores, torch.Tensor) or scores.shape != (len(chunk), self.num_classes):
                shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise LearnerFailed(f"learner '{learner.name}': predict() returned {shape}, "
                                    f"expected ({len(chunk)}, {self.num_classes})")
            right.append(scores.float().masked_fill(~mask, float("-inf")).argmax(1) == self.inputs.y_test[chunk])
        return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def pooled_accuracy(self, learner: Learner, classes: list[int], trained_through: int) -> float:
        """Accuracy (%) of `learner` over every test sample of `classes`, scores masked to them."""
        start = time.perf_counter()
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        mask[classes] = True
        index = torch.nonzero(mask[self.inputs.y_test]).flatten()
        right = self._correct(index, None, mask, trained_through, learner)
        self.seconds += time.perf_counter() - start
        return 100.0 * float(right.float().mean()) if len(right) else float("nan")

    @torch.no_grad()
    def accuracies(self, trained_through: int) -> list[float]:
        """Accuracy (%) on each experience's test data after training through `trained_through`."""
        start = time.perf_counter()
        if self.shared_pass:
            right = self._correct(self.union, None, self._mask(trained_through, 0), trained_through)
            per_experience = [right[pos] for pos in self.positions]
        else:
            per_experience = [
                self._correct(index, self.stream.experiences[j].task if self.stream.task_ids_at_test else None,
                              self._mask(trained_through, j), trained_through)
                for j, index in enumerate(self.test_index)
            ]
        correct = [int(r.sum()) for r in per_experience]
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        if trained_through >= 0:  # accuracy over every distinct test sample of the experiences seen so far
            seen = slice(0, trained_through + 1)
            if self.shared_pass:
                union_seen = torch.unique(torch.cat(self.positions[seen]))
                self.curve.append(100.0 * float(right[union_seen].float().mean()) if len(union_seen) else float("nan"))
            else:
                self.curve.append(100.0 * sum(correct[seen]) / max(1, sum(len(i) for i in self.test_index[seen])))
        return [100.0 * c / len(i) if len(i) else float("nan") for c, i in zip(correct, self.test_index)]
