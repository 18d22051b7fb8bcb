"""A clbench learner as an Avalanche strategy: trained in Avalanche's loop on an Avalanche benchmark,
evaluated by Avalanche's evaluation plugins."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avalanche.training.templates import SupervisedTemplate

from clbench.backbones import backbone_factory
from clbench.device import resolve_device
from clbench.learner import Context, ExperienceInfo, Learner


def avalanche_context(benchmark: Any, *, backbone: str = "mlp", wants: str = "images", seed: int = 0,
                      device: str | torch.device = "cpu", num_classes: int | None = None) -> Context:
    """The `Context` a clbench learner gets for an Avalanche benchmark: its number of classes (the
    benchmark's `n_classes`, else the largest training label + 1), the shape of one training input (flat
    for `wants = "features"` learners: the flattened input is their feature), its number of training
    experiences, and the clbench `backbone` (by name) for those images."""
    stream = benchmark.train_stream
    x = stream[0].dataset[0][0]
    if num_classes is None:
        num_classes = getattr(benchmark, "n_classes", None) or 1 + max(
            int(max(exp.dataset.targets)) for exp in stream)
    shape = tuple(x.shape)
    return Context(device=resolve_device(device), num_classes=num_classes,
                   input_shape=(math.prod(shape),) if wants == "features" else shape, seed=seed,
                   backbone=backbone_factory(backbone, shape), n_experiences=len(stream), progress=False)


class _LearnerModule(nn.Module):
    """The learner's torch modules, as the one model Avalanche moves, counts and switches train/eval."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(learner.modules())


class LearnerStrategy(SupervisedTemplate):
    """Avalanche's supervised template driving a clbench `learner`: each training experience is
    `begin_experience`, one `learn(x, y, task)` per mini-batch of Avalanche's loader (`train_mb_size`,
    `train_epochs`, its shuffling and plugins' data), `end_experience`; evaluation forwards `predict`,
    so Avalanche's metrics (accuracy, forgetting, ...) score the learner's raw scores over all classes
    (Avalanche masks nothing: clbench masks class-incremental scores to the classes seen so far).

    The learner owns its update: plugins that change the loss or the optimizer step have no effect;
    those that change the data (replay loaders) or only observe (metrics, loggers) work as usual. The
    task label of a batch is given to the learner only if it `needs_task_ids`.
    """

    def __init__(self, *, learner: Learner, train_mb_size: int = 32, train_epochs: int = 1,
                 eval_mb_size: int | None = None, plugins: list | None = None, evaluator: Any = None,
                 eval_every: int = -1) -> None:
        self.learner = learner
        super().__init__(model=_LearnerModule(learner), optimizer=None, criterion=nn.CrossEntropyLoss(),
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=learner.device, plugins=plugins, evaluator=evaluator, eval_every=eval_every)

    def _task(self) -> int | None:
        return int(self.mb_task_id[0]) if self.learner.needs_task_ids and len(self.mb_task_id) else None

    def _info(self) -> ExperienceInfo:
        exp = self.experience
        targets = exp.dataset.targets
        task = int(exp.dataset.targets_task_labels[0]) if self.learner.needs_task_ids else None
        return ExperienceInfo(exp.current_experience, tuple(sorted({int(t) for t in targets})), task,
                              len(exp.dataset), self.learner.context.n_experiences)

    # ---- what the template's loop calls -------------------------------------------------------
    def model_adaptation(self, model: nn.Module | None = None) -> nn.Module:
        return model or self.model

    def make_optimizer(self, **kwargs: Any) -> None:
        """The learner owns its optimizer."""

    def _before_training_exp(self, **kwargs: Any) -> None:
        super()._before_training_exp(**kwargs)
        self.learner.begin_experience(self._info())

    def _after_training_exp(self, **kwargs: Any) -> None:
        self.learner.end_experience(self._info())
        super()._after_training_exp(**kwargs)

    def training_epoch(self, **kwargs: Any) -> None:
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            x = self.mb_x.flatten(1) if self.learner.wants == "features" else self.mb_x
            self.learner.learn(x, self.mb_y, self._task())
            self._after_training_iteration(**kwargs)

    def forward(self) -> torch.Tensor:
        x = self.mb_x.flatten(1) if self.learner.wants == "features" else self.mb_x
        return self.learner.predict(x, self._task())

    def criterion(self) -> torch.Tensor:
        return F.cross_entropy(self.mb_output.float(), self.mb_y) if self.mb_output is not None \
            else torch.zeros((), device=self.device)
