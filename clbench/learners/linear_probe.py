"""The linear probe: a softmax layer on frozen features."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from clbench.learner import Context
from clbench.learners.finetune import Finetune


class _Features(nn.Flatten):
    """The identity on N x D features, as a backbone (`out_dim` = D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim


class LinearProbe(Finetune):
    """Linear probe: a softmax layer on the frozen features trained by SGD, the standard probe baseline.

    Trained on the cross-entropy of each batch in turn (SGD or Adam), with no protection against forgetting.

    Exactly `finetune` (same hyper-parameters, optimizer and state) with the features as its backbone,
    so only the linear head learns. Task-free and online.
    """

    name = "linear-probe"
    wants = "features"
    online = True

    def __init__(self, context: Context, **kwargs: Any) -> None:
        head_only = dataclasses.replace(context, backbone=lambda name=None, **_: _Features(context.feature_dim))
        super().__init__(head_only, **kwargs)
        self.context = context  # the run's context, as the contract wants; only the head was built from head_only
