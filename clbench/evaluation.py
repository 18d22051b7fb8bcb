"""Evaluation after each experience: batched passes over the test data, masking, accuracies.

A learner never sees a test image of a class it has not been trained on among the images it is
scoring: every `predict` call holds either test images of trained classes only, or images of one
single experience scored on its own (A[i][j], j > i; the untrained pass). A transductive learner's
accuracy on the classes it knows therefore cannot depend on the test images of the future.
"""

from __future__ import annotations

import time

import torch

from clbench.device import synchronize
from clbench.guard import checked_scores, guard, require_finite
from clbench.inputs import Inputs
from clbench.learner import Learner
from clbench.scenario import Scenario


class Evaluator:
    """Scores the test data in batched passes, masks, and counts correct answers per experience.

    Where neither the task id nor the mask depends on the evaluated experience (class- and
    domain-incremental), the test images of every trained class (from the union of all test sets)
    are scored in one shared pass per evaluation, and each experience's accuracy is read from it:
    overlapping test sets (CoRe50 NIC) cost nothing extra. An experience's test images of classes
    not yet trained are scored in a pass of their own, or not at all where the mask rules out every
    one of their labels (class-incremental: they cannot be right).
    """

    def __init__(self, scenario: Scenario, inputs: Inputs, learner: Learner) -> None:
        self.stream, self.inputs, self.learner = scenario.stream, inputs, learner
        self.batch_size = scenario.spec.eval_batch_size
        self.num_classes = scenario.dataset.num_classes
        self.device = inputs.y_test.device
        self.test_index = [torch.as_tensor(e.test_indices, device=self.device) for e in self.stream.experiences]
        self.shared_pass = not self.stream.task_ids_at_test and self.stream.mask != "task"
        self.union = torch.unique(torch.cat(self.test_index)) if self.test_index else torch.zeros(0, dtype=torch.long)
        self.positions = [torch.searchsorted(self.union, index) for index in self.test_index]
        self.curve: list[float] = []
        self.seconds = 0.0

    def class_mask(self, classes: list[int]) -> torch.Tensor:
        """A boolean vector over the scenario's classes, True for `classes`."""
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        mask[classes] = True
        return mask

    def _trained(self, trained_through: int) -> list[int]:
        return [c for e in self.stream.experiences[: trained_through + 1] for c in e.classes]

    def _mask(self, trained_through: int, evaluated: int) -> torch.Tensor:
        if self.stream.mask == "seen":
            return self.class_mask(self._trained(trained_through))
        if self.stream.mask == "task":
            return self.class_mask(list(self.stream.experiences[evaluated].classes))
        return self.class_mask(list(range(self.num_classes)))

    def _correct(self, index: torch.Tensor, task: int | None, mask: torch.Tensor, trained_through: int,
                 learner: Learner | None = None) -> torch.Tensor:
        """Per-sample correctness (bool) of the masked prediction on test samples `index`."""
        learner = learner or self.learner
        right, finite = [], torch.ones((), dtype=torch.bool, device=self.device)
        for chunk in index.split(self.batch_size) if len(index) else ():  # an empty index asks nothing
            scores = guard(learner, "predict", trained_through, learner.predict, self.inputs.batch("test", chunk), task)
            scores = checked_scores(learner, scores, len(chunk), self.num_classes).float()
            finite &= torch.isfinite(scores).all()
            right.append(scores.masked_fill(~mask, float("-inf")).argmax(1) == self.inputs.y_test[chunk])
        require_finite(learner, finite, trained_through)
        return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def pooled_accuracy(self, learner: Learner, classes: list[int], trained_through: int) -> float:
        """Accuracy (%) of `learner` over every test sample of `classes` (classes it has been trained
        on: its batches hold nothing else), scores masked to them."""
        start = time.perf_counter()
        mask = self.class_mask(classes)
        index = torch.nonzero(mask[self.inputs.y_test]).flatten()
        right = self._correct(index, None, mask, trained_through, learner)
        self.seconds += time.perf_counter() - start
        return 100.0 * float(right.float().mean()) if len(right) else float("nan")

    def _shared(self, trained_through: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-experience correctness, and correctness per union position pooled over the experiences
        trained so far: one pass over the trained classes' test images, one per experience for the rest."""
        mask = self._mask(trained_through, 0)
        labels = self.inputs.y_test
        known = self.class_mask(self._trained(trained_through))[labels[self.union]]
        right = torch.zeros(len(self.union), dtype=torch.bool, device=self.device)
        right[known] = self._correct(self.union[known], None, mask, trained_through)
        pooled, per_experience = right.clone(), []
        for j, (index, pos) in enumerate(zip(self.test_index, self.positions)):
            own, new = right[pos], ~known[pos]
            if bool(mask[labels[index[new]]].any()):  # else none of them can be right: no pass
                own[new] = self._correct(index[new], None, mask, trained_through)
            if j <= trained_through:
                pooled[pos] = own
            per_experience.append(own)
        return per_experience, pooled

    @torch.no_grad()
    def accuracies(self, trained_through: int) -> list[float]:
        """Accuracy (%) on each experience's test data after training through `trained_through`."""
        start = time.perf_counter()
        if self.shared_pass:
            per_experience, pooled = self._shared(trained_through)
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
                self.curve.append(100.0 * float(pooled[union_seen].float().mean()) if len(union_seen) else float("nan"))
            else:
                self.curve.append(100.0 * sum(correct[seen]) / max(1, sum(len(i) for i in self.test_index[seen])))
        return [100.0 * c / len(i) if len(i) else float("nan") for c, i in zip(correct, self.test_index)]
