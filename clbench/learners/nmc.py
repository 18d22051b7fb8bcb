"""Nearest class mean on frozen features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clbench.learner import Context, Learner


class NMC(Learner):
    """Nearest class mean: a running feature sum and count per class; predicts the closest mean.

    Sums accumulate in float64 (order-independent to rounding); distances are computed in float32.

    Fed the run's frozen-encoder features (`encoder` in the scenario; `flatten` is the input
    itself). Exemplar-free, order-independent, task-free and online. Scores are negative
    Euclidean distances to the class means (mean = sum / count, not re-normalised); classes never
    seen score the lowest finite value.
    """

    name = "nmc"
    wants = "features"
    online = True

    def __init__(self, context: Context, *, l2_normalize: bool = False) -> None:
        super().__init__(context)
        self.l2_normalize = l2_normalize
        self.sums = torch.zeros(context.num_classes, context.feature_dim, dtype=torch.float64, device=context.device)
        self.counts = torch.zeros(context.num_classes, dtype=torch.float64, device=context.device)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).float()
        return F.normalize(x, dim=1) if self.l2_normalize else x

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        self.sums.index_add_(0, y, self._features(x).to(torch.float64))
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        means = (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()
        scores = -torch.cdist(self._features(x), means)
        return scores.masked_fill(self.counts == 0, torch.finfo(scores.dtype).min)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
