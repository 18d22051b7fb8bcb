"""Task-incremental training with one head per task (`til_training = "masked"`): the one place every
classifier-training learner excludes, per sample, the logits of other tasks' classes from its softmax.

This is the convention of van de Ven et al.'s Task-IL scenario ("Three types of incremental learning",
Nature Machine Intelligence 2022: a multi-headed output layer, each task's loss over its own classes,
replayed samples of an earlier task over theirs) and of Avalanche's `MultiHeadClassifier` (one head per
task label, the units a task never used masked out). `til_training = "single-head"` trains over all
classes, as a class-incremental learner would, and masks only at test (Mammoth's Task-IL figures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clbench.errors import ClbenchError
from clbench.learner import Context


class TaskMask:
    """Which task each class belongs to (from `Context.task_classes`) and, when the run trains
    task-incremental with `til_training = "masked"`, the masking of each sample's logits to the classes
    of its task. A sample's task is the task of its label, so a replayed sample of an earlier task is
    masked to ITS task's classes and a batch that mixes tasks (joint, replay) needs no task ids.

    Inactive (single-head training, or a stream that gives no task at training): logits pass unchanged
    and `cross_entropy` is `F.cross_entropy`.
    """

    def __init__(self, context: Context) -> None:
        self.class_task: torch.Tensor | None = None
        """The task of each class (num_classes,), -1 for a class in no task; None when inactive."""
        if context.til_training == "masked":
            self.class_task = class_tasks(context.task_classes, context.num_classes).to(context.device)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`logits` (N x C) with every class outside the task of sample i's label `y[i]` set to the dtype's
        lowest finite value: exp() of it is 0 in any softmax, and being finite it never makes inf - inf =
        NaN (the label's own class is never masked). One vectorised mask, no host synchronisation."""
        if self.class_task is None:
            return logits
        return logits.masked_fill(~self._allowed(y), torch.finfo(logits.dtype).min)

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mean cross-entropy of each sample over its task's classes (inactive: over all classes).
        Label smoothing spreads its mass over the sample's task's classes only:
        (1 - eps) * (-log p_y) + eps * mean over the task's classes c of (-log p_c)."""
        if self.class_task is None or not label_smoothing:
            return F.cross_entropy(self(logits, y), y, label_smoothing=label_smoothing)
        allowed = self._allowed(y)
        log_p = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min).log_softmax(1)
        nll = -log_p.gather(1, y.unsqueeze(1)).squeeze(1)
        uniform = -torch.where(allowed, log_p, 0.0).sum(1) / allowed.sum(1)
        return ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()

    def _allowed(self, y: torch.Tensor) -> torch.Tensor:
        """N x C: whether class c is in the task of label y[i]."""
        return self.class_task == self.class_task[y].unsqueeze(1)


def class_tasks(task_classes: tuple[tuple[int, ...], ...], num_classes: int) -> torch.Tensor:
    """The task id of each of `num_classes` classes (-1: in no task) from the classes of each task;
    a class listed under two tasks is a one-line error (its head would be ambiguous)."""
    table = torch.full((num_classes,), -1, dtype=torch.int64)
    for task, classes in enumerate(task_classes):
        index = torch.as_tensor(classes, dtype=torch.int64)
        if (table[index] >= 0).any():
            raise ClbenchError(f"task {task} shares a class with an earlier task; masked task-incremental training "
                               f"needs disjoint classes per task (use til_training=single-head)")
        table[index] = task
    return table
