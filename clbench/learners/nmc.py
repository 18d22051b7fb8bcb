"""Nearest class mean on frozen features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clbench.errors import ClbenchError
from clbench.learner import Context, Learner
from clbench.learners.prototypes import PrototypeMemory


class NMC(Learner):
    """Nearest class mean: a running feature sum and count per class; predicts the closest mean.

    Fed the run's frozen-encoder features (`encoder` in the scenario; `flatten` is the input
    itself), optionally L2-normalised (as Janson et al. 2022 do with ViT features). Means are
    sum / count, not re-normalised. Scores are negative squared Euclidean distances (the same
    ranking as distances); classes never seen score the lowest finite value. Exemplar-free,
    order-independent, task-free and online; mergeable by adding other learners' (sum, count)
    deltas since their last load (federated reconnaissance).
    """

    name = "nmc"
    wants = "features"
    online = True
    mergeable = True

    def __init__(self, context: Context, *, l2_normalize: bool = False) -> None:
        super().__init__(context)
        self.l2_normalize = l2_normalize
        self.memory = PrototypeMemory(context.num_classes, context.feature_dim, context.device)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).float()
        return F.normalize(x, dim=1) if self.l2_normalize else x

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        self.memory.add(self._features(x), y)

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        return self.memory.scores(self._features(x))

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load(state)

    def episodic_state(self) -> dict[str, Any]:
        return self.memory.episodic_state()

    def load_episodic_state(self, state: dict[str, Any]) -> None:
        self.memory.load_episodic_state(state)

    def merge(self, others: list[Learner]) -> None:
        for other in others:
            if not isinstance(other, NMC) or other.memory.dim != self.memory.dim \
                    or other.l2_normalize != self.l2_normalize:
                raise ClbenchError(f"cannot merge nmc with {other.name} of another kind, dimension or normalisation")
        self.memory.absorb([other.memory.delta() for other in others])
