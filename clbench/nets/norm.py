"""Swappable normalisation for the nets: BatchNorm (as built) or AdaB²N (Lyu et al. NeurIPS 2023).

`swap_norm(model, "adab2n", ...)` replaces every `nn.BatchNorm2d` of any network (a small net or a
timm model) with an `AdaB2N` layer that keeps its affine parameters, running statistics, eps and
momentum. A replay learner tells the layers, before each training forward, which task every sample
of the (stream + buffer) batch belongs to (`assign_tasks`), and adds `regulariser(model)` to its loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.errors import ClbenchError

Norm = Literal["bn", "adab2n"]
NORMS: tuple[str, ...] = ("bn", "adab2n")


class AdaB2N(nn.Module):
    """Adaptive Balance of BN: a drop-in for `nn.BatchNorm2d` in online continual learning.

    Training forward, with `assign_tasks` giving each sample's task t(i) and the current task T:
    with n_t samples of task t in the batch, pi_t = (exp(eta_t) + n_t) / sum_{k <= T} (exp(eta_k) + n_k),
    sample weight w_i = pi_t(i) / n_t(i), and the batch mean and (biased) variance are w-weighted (the
    weights sum to 1 when every task up to T is in the batch, as in the official code). In the first
    task (T = 0) pi_0 = 1 exactly, every w_i = 1 / N and eta gets no gradient: the plain batch
    statistics the official code computes there (up to rounding: one formula for every task, selected
    by tensors, keeps the step free of host syncs).
    No assignment: plain batch statistics. eta (one learnable logit per task, initialised 0) trains
    with the network.

    Running statistics follow mu_R <- (1 - m_s) mu_R + m_s mu_B (the same for the variance) at the
    s-th training forward, m_1 = m^kappa, m_s = m_{s-1} / (m_{s-1} + (1 - m)^kappa), m the BN momentum:
    kappa = 1 is BatchNorm's constant momentum, kappa = 0 the cumulative mean of the batch statistics.
    `stats_loss` (after each training forward) is MSE(mu_B, mu_R) + MSE(var_B, var_R), the statistics
    regulariser. Evaluation normalises with the running statistics only, never the test batch's.
    """

    def __init__(self, num_features: int, n_tasks: int, kappa: float, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        if not 0 <= kappa <= 1:
            raise ClbenchError(f"adab2n: kappa must be in [0, 1], got {kappa}")
        self.num_features, self.n_tasks, self.kappa, self.eps, self.momentum = num_features, n_tasks, kappa, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.eta = nn.Parameter(torch.zeros(n_tasks))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("step_momentum", torch.tensor(0.0, dtype=torch.float64))  # m_s; 0 before the first step
        self.tasks: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None  # samples of each task in the batch (n_tasks,)
        self.active: torch.Tensor | None = None  # whether each task is one of 0 .. T (n_tasks,) bool
        self.several: torch.Tensor | None = None  # T > 0, 0-dim bool
        self.stats_loss = torch.zeros(())

    @classmethod
    def replacing(cls, bn: nn.BatchNorm2d, n_tasks: int, kappa: float) -> AdaB2N:
        """An AdaB²N layer with the affine parameters and running statistics of `bn`."""
        if not (bn.affine and bn.track_running_stats) or bn.momentum is None:
            raise ClbenchError("adab2n replaces BatchNorm2d layers with affine parameters, running statistics and a "
                               "momentum; this network has another kind")
        layer = cls(bn.num_features, n_tasks, kappa, bn.eps, bn.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(layer, name).copy_(getattr(bn, name))
        return layer.to(bn.weight.device)

    def next_momentum(self) -> torch.Tensor:
        """Advance and return m_s, the momentum of this training step (a tensor: no device sync)."""
        m, previous = self.momentum, self.step_momentum
        following = previous / (previous + (1 - m) ** self.kappa)
        self.step_momentum.copy_(torch.where(previous == 0, torch.full_like(previous, m ** self.kappa), following))
        return self.step_momentum

    def batch_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, biased variance) of `x`, task-weighted when tasks are assigned."""
        if self.tasks is None or self.counts is None or self.active is None or self.several is None:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            return mean, var
        if len(self.tasks) != len(x):
            raise ClbenchError(f"adab2n: tasks were assigned to {len(self.tasks)} samples, the batch has {len(x)}")
        counts = self.counts.to(x.dtype)
        concentration = torch.where(self.active, self.eta.exp().to(x.dtype) + counts, 0)
        share = torch.where(self.several, concentration / concentration.sum(), 1.0)  # pi
        weights = (share / counts.clamp(min=1))[self.tasks]
        mean = weights @ x.mean(dim=(2, 3))
        var = weights @ (x - mean.view(1, -1, 1, 1)).square().mean(dim=(2, 3))
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        mean, var = self.batch_statistics(x)
        momentum = self.next_momentum()
        with torch.no_grad():
            weight = momentum.to(self.running_mean.dtype)
            self.running_mean.lerp_(mean.detach().to(weight.dtype), weight)
            self.running_var.lerp_(var.detach().to(weight.dtype), weight)
        self.stats_loss = F.mse_loss(mean, self.running_mean.clone()) + F.mse_loss(var, self.running_var.clone())
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale.view(1, -1, 1, 1) + (self.bias - mean * scale).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, n_tasks={self.n_tasks}, kappa={self.kappa}, eps={self.eps}, momentum={self.momentum}"


def swap_norm(model: nn.Module, norm: str, *, n_tasks: int = 1, kappa: float = 1.0) -> nn.Module:
    """`model` with its normalisation `norm`: "bn" leaves it as built; "adab2n" replaces every
    `nn.BatchNorm2d` (in place; the model is returned) with `AdaB2N.replacing(bn, n_tasks, kappa)`.
    A network with no BatchNorm2d, or with a BatchNorm2d subclass (timm's BatchNormAct2d), is a
    one-line error."""
    if norm not in NORMS:
        raise ClbenchError(f"unknown norm '{norm}' (known: {' | '.join(NORMS)})")
    if norm == "bn":
        return model
    norms = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.BatchNorm2d)]
    other = {type(child).__name__ for _, _, child in norms if type(child) is not nn.BatchNorm2d}
    if not norms or other:
        found = f"has {', '.join(sorted(other))} layers, which it cannot replace" if other \
            else "has no BatchNorm2d layer to replace"
        raise ClbenchError(f"norm=adab2n: the network {found}; choose a backbone with plain batch "
                           f"normalisation (reduced_resnet18, resnet32, small_cnn, conv4, resnet12, timm resnets)")
    for parent, name, child in norms:
        setattr(parent, name, AdaB2N.replacing(child, n_tasks, kappa))
    return model


def adab2n_layers(model: nn.Module) -> list[AdaB2N]:
    """The AdaB²N layers of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, AdaB2N)]


def assign_tasks(layers: list[AdaB2N], tasks: torch.Tensor | None, current: int | torch.Tensor) -> None:
    """Tell `layers` the task of each sample of the next training batch (int64, N) and the current
    task `current` (tasks 0 .. current count; an int or a 0-dim tensor on the device); None: plain
    batch statistics. Fixed-size counts (no `bincount`, whose size depends on the data): no host sync."""
    if not layers:
        return
    counts = active = several = None
    if tasks is not None:
        positions = torch.arange(layers[0].n_tasks, device=tasks.device)
        counts = torch.zeros_like(positions).scatter_add_(0, tasks, torch.ones_like(tasks))
        active = positions <= current
        several = active[1:].any()
    for layer in layers:
        layer.tasks, layer.counts, layer.active, layer.several = tasks, counts, active, several


def regulariser(layers: list[AdaB2N]) -> torch.Tensor:
    """Sum over `layers` of their last training forward's statistics loss."""
    return torch.stack([layer.stats_loss for layer in layers]).sum()
