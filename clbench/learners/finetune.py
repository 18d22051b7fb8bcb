"""Plain fine-tuning: the lower bound."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.learner import Context, Learner, Range, Step
from clbench.learners.task_heads import TaskMask


class Finetune(Learner):
    """Fine-tuning: the run's backbone plus a linear head over all classes, trained by SGD or Adam
    on each experience in turn with cross-entropy, no protection against forgetting (lower bound).

    Task-incremental with `til_training = "masked"` (the default), each sample's cross-entropy is over
    its task's classes only (`clbench.learners.task_heads.TaskMask`: one head per task); single-head or
    elsewhere, over all classes."""

    name = "finetune"
    wants = "images"
    online = True

    def __init__(
        self,
        context: Context,
        *,
        lr: Annotated[float, Range(gt=0)] = 0.05,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        weight_decay: Annotated[float, Range(ge=0)] = 0.0,
    ) -> None:
        super().__init__(context)
        backbone = context.backbone()
        self.net = nn.Sequential(backbone, nn.Linear(backbone.out_dim, context.num_classes)).to(context.device)
        self.task_mask = TaskMask(context)
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> Step:
        self.net.train()
        scores = self.task_mask(self.net(x), y)
        loss = F.cross_entropy(scores, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return Step(loss.detach(), scores.detach())

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        self.net.eval()
        return self.net(x)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
