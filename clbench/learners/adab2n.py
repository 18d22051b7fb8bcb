"""AdaB²N (Lyu et al. NeurIPS 2023): online replay with adaptively balanced batch normalisation."""

from __future__ import annotations

from typing import Any, Literal

from clbench.learner import Context
from clbench.learners.replay import Loss, Replay


class AdaB2N(Replay):
    """AdaB²N: replay (ER-ACE; DER++ with loss=der) over a backbone whose BatchNorm2d layers are AdaB²N.

    AdaB²N layers (`clbench.nets.norm.AdaB2N`): task-weighted batch statistics with learnable task
    logits, a momentum schedule set by `kappa` (1: BatchNorm, 0: cumulative mean), and `reg_weight` x
    the statistics regulariser from task `reg_from_task` on. It is `replay` with loss=er-ace and
    norm=adab2n (see `replay` for the step, the buffer and how tasks are assigned).

    Defaults: the official code fixes none for kappa and lambda (the paper grid-searches kappa in
    {0.1, 0.4, 0.7, 1.0}, lambda in {0.01 .. 10} on CIFAR and {1e-5 .. 1e-2} on mini-ImageNet): kappa = 0.4
    and reg_weight = 1e-4 come from those grids (the regulariser's raw scale is large: with lr 0.05 and
    momentum 0.9, 1e-3 diverged on split-digits-online with loss=der, kappa=1), and reg_from_task = 1 is when the
    official ER-ACE base first applies it (it has no buffer batch in task 0).
    """

    name = "adab2n"

    def __init__(self, context: Context, *, loss: Loss = "er-ace", norm: Literal["adab2n"] = "adab2n",
                 **replay: Any) -> None:
        super().__init__(context, loss=loss, norm=norm, **replay)
