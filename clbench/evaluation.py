"""Evaluation after each experience: batched passes over the test data, masking, accuracies.

A learner never sees a test image of a class it has not been trained on among the images it is
scoring: every `predict` call holds either test images of trained classes only, or images of one
single experience scored on its own (A[i][j], j > i; the untrained pass). A transductive learner's
accuracy on the classes it knows therefore cannot depend on the test images of the future.

Class- and task-incremental streams (experiences = class groups = tasks) are scored both ways
(`SCORINGS`): a class-incremental run's Task-IL row reads the very scores of its class-incremental
pass masked to each experience's classes (predict was given no task id: a task-free learner's
Task-IL figure, as Mammoth reports "task-il"); a task-incremental run adds one pass without task ids
over the trained classes' test images, masked to the classes seen so far (a learner that needs task
ids at test then runs its task-free inference).
"""

from __future__ import annotations

import time

import torch

from clbench.device import synchronize
from clbench.guard import checked_scores, guard, require_finite
from clbench.inputs import Inputs
from clbench.learner import Learner
from clbench.scenario import Scenario

SCORINGS = {"class-incremental": ("class_il", "task_il"), "task-incremental": ("task_il", "class_il")}
"""Protocols whose experiences are class groups (tasks) -> (the scoring of their accuracy matrix, the other
scoring, recorded beside it in `Evaluator.other_rows`). Class-IL: scores masked to the classes seen so
far, no task id; Task-IL: masked to the evaluated experience's classes."""


class Evaluator:
    """Scores the test data in batched passes, masks, and counts correct answers per experience.

    Where neither the task id nor the mask depends on the evaluated experience (class- and
    domain-incremental), the test images of every trained class (from the union of all test sets)
    are scored in one shared pass per evaluation, and each experience's accuracy is read from it:
    overlapping test sets (CoRe50 NIC) cost nothing extra. An experience's test images of classes
    not yet trained are scored in a pass of their own, or not at all where the mask rules out every
    one of their labels (class-incremental: they cannot be right).

    Where the protocol has both scorings (`SCORINGS`), each evaluation after training also appends
    the other scoring's row to `other_rows`: Task-IL for a class-incremental run (no extra pass; None
    for the experiences not yet trained, which that pass does not score), Class-IL for a
    task-incremental one (0 for the experiences not yet trained: their classes are masked out).
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
        self.other = SCORINGS.get(self.stream.protocol, (None, None))[1]
        self.other_rows: list[list[float | None]] = []
        self.same_experience = self._same_experience() if self.other == "task_il" else None
        """C x C: whether two classes belong to one experience; row y is the Task-IL mask of a label y."""
        self.curve: list[float] = []
        self.seconds = 0.0

    def _same_experience(self) -> torch.Tensor:
        group = torch.full((self.num_classes,), -1, device=self.device)
        for j, exp in enumerate(self.stream.experiences):
            group[list(exp.classes)] = j
        return group[:, None] == group[None, :]

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

    def _correct(self, index: torch.Tensor, task: int | None, masks: tuple[torch.Tensor, ...], trained_through: int,
                 learner: Learner | None = None) -> list[torch.Tensor]:
        """Per-sample correctness (bool) on test samples `index` of the prediction under each of `masks`
        (one pass): a class mask (C,), or a C x C mask whose row y masks the samples labelled y."""
        learner = learner or self.learner
        right, finite = [[] for _ in masks], torch.ones((), dtype=torch.bool, device=self.device)
        for chunk in index.split(self.batch_size) if len(index) else ():  # an empty index asks nothing
            scores = guard(learner, "predict", trained_through, learner.predict, self.inputs.batch("test", chunk), task)
            scores = checked_scores(learner, scores, len(chunk), self.num_classes).float()
            finite &= torch.isfinite(scores).all()
            labels = self.inputs.y_test[chunk]
            for out, mask in zip(right, masks):
                allowed = mask if mask.dim() == 1 else mask[labels]
                out.append(scores.masked_fill(~allowed, float("-inf")).argmax(1) == labels)
        require_finite(learner, finite, trained_through)
        return [torch.cat(r) if r else torch.zeros(0, dtype=torch.bool, device=self.device) for r in right]

    @torch.no_grad()
    def pooled_accuracy(self, learner: Learner, classes: list[int], trained_through: int) -> float:
        """Accuracy (%) of `learner` over every test sample of `classes` (classes it has been trained
        on: its batches hold nothing else), scores masked to them."""
        start = time.perf_counter()
        mask = self.class_mask(classes)
        index = torch.nonzero(mask[self.inputs.y_test]).flatten()
        right = self._correct(index, None, (mask,), trained_through, learner)[0]
        self.seconds += time.perf_counter() - start
        return 100.0 * float(right.float().mean()) if len(right) else float("nan")

    def _shared(self, trained_through: int, mask: torch.Tensor, task_il: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor | None]]:
        """Per-experience correctness under `mask` (no task id), and correctness per union position pooled
        over the experiences trained so far: one pass over the trained classes' test images, one per
        experience for the rest. With `task_il`, also the trained experiences' correctness of the same
        scores masked to each sample's own experience's classes (None for the others: not scored)."""
        labels = self.inputs.y_test
        known = self.class_mask(self._trained(trained_through))[labels[self.union]]
        masks = (mask, self.same_experience) if task_il else (mask,)
        right = [torch.zeros(len(self.union), dtype=torch.bool, device=self.device) for _ in masks]
        for out, correct in zip(right, self._correct(self.union[known], None, masks, trained_through)):
            out[known] = correct
        pooled, per_experience, per_task = right[0].clone(), [], []
        for j, (index, pos) in enumerate(zip(self.test_index, self.positions)):
            own, new = right[0][pos], ~known[pos]
            if bool(mask[labels[index[new]]].any()):  # else none of them can be right: no pass
                own[new] = self._correct(index[new], None, (mask,), trained_through)[0]
            if j <= trained_through:
                pooled[pos] = own
            per_experience.append(own)
            per_task.append(right[1][pos] if task_il and j <= trained_through else None)
        return per_experience, pooled, per_task

    @torch.no_grad()
    def accuracies(self, trained_through: int) -> list[float]:
        """Accuracy (%) on each experience's test data after training through `trained_through`."""
        start = time.perf_counter()
        other: list[torch.Tensor | None] | None = None
        if self.shared_pass:
            per_experience, pooled, other = self._shared(trained_through, self._mask(trained_through, 0),
                                                         task_il=self.other == "task_il")
        else:
            per_experience = [
                self._correct(index, self.stream.experiences[j].task if self.stream.task_ids_at_test else None,
                              (self._mask(trained_through, j),), trained_through)[0]
                for j, index in enumerate(self.test_index)
            ]
            if self.other == "class_il" and trained_through >= 0:
                other = self._shared(trained_through, self.class_mask(self._trained(trained_through)))[0]
        correct = [int(r.sum()) for r in per_experience]
        if other is not None and trained_through >= 0:
            self.other_rows.append([None if r is None else 100.0 * int(r.sum()) / len(r) if len(r) else float("nan")
                                    for r in other])
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

    def matrices(self, rows: list[list[float]]) -> dict[str, list[list[float | None]]]:
        """{"class_il": ..., "task_il": ...}: the protocol's accuracy matrix `rows` under its scoring's name
        and `other_rows` under the other's; {} where the protocol does not have both (`SCORINGS`)."""
        own = SCORINGS.get(self.stream.protocol)
        return {own[0]: rows, own[1]: self.other_rows} if own else {}
