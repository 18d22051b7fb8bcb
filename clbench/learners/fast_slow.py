"""Fast and slow weights for few-shot continual learning (after Wang et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch

from clbench.learner import Context, ExperienceInfo, Range
from clbench.learners.finetune import Finetune

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Consolidation:
    """What the two-step consolidation leaves between experiences. Never changed in place (each
    consolidation builds a new one), so a snapshot shares it instead of copying it."""

    slow: Tensors
    """The slow weights: every floating-point entry of the network's state dict (BN statistics too)."""
    anchor: Tensors
    """The fast parameters at the end of the last experience (empty when `fast_penalty = 0`)."""
    importance: Tensors
    """The online diagonal Fisher of each parameter (empty when `fast_penalty = 0`)."""

    def __deepcopy__(self, memo: dict) -> Consolidation:
        return self  # immutable: sharing is safe, and restoring an episode then copies no slow weights


class FastSlow(Finetune):
    """Fast and slow weights: EWC-protected fast weights that predict, Reptile-moved slow weights to adapt from.

    After Wang et al. 2021 ("Few-shot Continual Learning: a Brain-inspired Approach"), of which only
    the idea is public; the details below are this implementation's. The network, optimizer and
    cross-entropy step are finetune's (the run's backbone plus a linear head over all classes; the
    optimizer state carries over between experiences); they hold the FAST weights theta, which
    `predict` uses. On top:

    - Penalty: the fast weights minimise the cross-entropy plus
      P(theta) = fast_penalty / 2 * sum_i F_i (theta_i - theta*_i)^2 (`penalty()`), with theta* the fast
      parameters at the end of the last experience (the anchor) and F the online diagonal Fisher (none
      before the first experience has ended). P is applied by its proximal step after each optimizer
      step on the cross-entropy: theta_i <- theta*_i + (theta_i - theta*_i) / (1 + lr * fast_penalty * F_i)
      (lr: the optimizer's). Unlike adding P's gradient, this is stable for any fast_penalty * F (the
      explicit step diverges once lr * fast_penalty * F_i > 2, which happens on real data); a very
      important parameter is held at its anchor.
    - Importance, an online estimate made from the gradients the training step computes anyway:
      within an experience, every batch of size B adds B * g^2 (g: the gradient of the batch's mean
      cross-entropy); the experience's F_t is the mean of these over the batches of its LAST pass (the
      accumulator restarts whenever `ExperienceInfo.n_samples` samples have been learned). For
      independent samples whose mean gradient is near zero, E[B g^2] is the per-sample empirical Fisher.
      F <- F + F_t (online EWC with decay 1, one anchor).
    - Two-step consolidation at `end_experience`: (1) F and the anchor theta* as above; (2) the slow
      weights phi move toward the fast ones, phi <- phi + slow_rate * (theta - phi) (`torch.lerp`,
      exact at 0 and 1; a Reptile-style interpolation), over every floating-point entry of the state
      dict (BN running statistics too). The first consolidation sets phi = theta.
    - Adaptation from the slow weights: the first `learn` after a consolidation (the next experience:
      an FSCIL session; or, in few-shot episodes, the support set, learned outside any experience)
      first sets the fast weights to phi, then trains them (with the penalty).

    `fast_penalty = 0` computes no importance; `fast_penalty = 0, slow_rate = 1` is exactly finetune
    (phi = theta after each experience, the reset copies theta onto itself). Without task boundaries
    nothing is ever consolidated: plain finetune. `episodic_state()` is what learning changes between
    consolidations (fast weights, optimizer, counters) plus a reference to the immutable
    `Consolidation`: restoring an episode copies no slow weights, anchor or Fisher.

    Departures from the paper's description: its equations and schedules are not public, so the
    penalty (EWC, applied as a proximal step), the importance (mini-batch empirical Fisher during the
    last pass, not per-sample gradients at the final weights), the slow update (one interpolation step
    per experience, no inner meta-learning loop) and the start of the slow weights (the first
    experience's fast weights, not the random initialisation) are our choices; the slow weights never
    predict.
    """

    name = "fast-slow"

    def __init__(self, context: Context, *, fast_penalty: Annotated[float, Range(ge=0)] = 100.0,
                 slow_rate: Annotated[float, Range(ge=0, le=1)] = 0.5, **finetune: Any) -> None:
        super().__init__(context, **finetune)
        self.fast_penalty, self.slow_rate = fast_penalty, slow_rate
        self.consolidation: Consolidation | None = None
        self.reset_pending = False
        """Whether the next `learn` first sets the fast weights to the slow ones."""
        self.experience_size: int | None = None
        """`n_samples` of the experience in progress (None outside one): the length of a pass."""
        self.taken = 0
        """Samples learned in the experience in progress."""
        self.fisher_sum: Tensors | None = None
        """Sum of B * g^2 over the batches of the current pass (None outside an experience)."""
        self.fisher_batches = 0

    # ---- the contract -------------------------------------------------------------------------
    def begin_experience(self, info: ExperienceInfo) -> None:
        self.experience_size, self.taken, self.fisher_sum, self.fisher_batches = info.n_samples, 0, None, 0

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if self.reset_pending:
            self._load_weights(self.consolidation.slow)
            self.reset_pending = False
        super().learn(x, y, task)
        self._pull_to_anchor()

    def _before_step(self, batch_size: int) -> None:
        if self.fast_penalty > 0 and self.experience_size:
            self._record_importance(batch_size)

    def end_experience(self, info: ExperienceInfo) -> None:
        fast = {name: t.detach().clone() for name, t in self.net.state_dict().items() if t.is_floating_point()}
        before = self.consolidation
        anchor: Tensors = {}
        importance: Tensors = {}
        if self.fast_penalty > 0:  # step 1: the fast weights' importance and anchor
            params = dict(self.net.named_parameters())
            anchor = {name: p.detach().clone() for name, p in params.items()}
            new = {name: self.fisher_sum[name] / self.fisher_batches if self.fisher_batches else torch.zeros_like(p)
                   for name, p in anchor.items()}
            importance = new if before is None else {name: before.importance[name] + f for name, f in new.items()}
        # step 2: the slow weights move toward the fast ones
        slow = fast if before is None else {name: torch.lerp(before.slow[name], t, self.slow_rate)
                                            for name, t in fast.items()}
        self.consolidation = Consolidation(slow, anchor, importance)
        self.reset_pending = True
        self.experience_size, self.taken, self.fisher_sum, self.fisher_batches = None, 0, None, 0

    # ---- the pieces -----------------------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """fast_penalty / 2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters (a differentiable
        scalar); 0 before the first consolidation or when `fast_penalty = 0`."""
        c = self.consolidation
        if c is None or not c.anchor:
            return torch.zeros((), device=self.device)
        terms = [(c.importance[name] * (p - c.anchor[name]).pow(2)).sum() for name, p in self.net.named_parameters()]
        return 0.5 * self.fast_penalty * torch.stack(terms).sum()

    @torch.no_grad()
    def _pull_to_anchor(self) -> None:
        """The penalty's proximal step: theta <- theta* + (theta - theta*) / (1 + lr * fast_penalty * F)."""
        c = self.consolidation
        if c is None or not c.anchor:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        for name, p in self.net.named_parameters():
            p.sub_(c.anchor[name]).div_(1 + lr * self.fast_penalty * c.importance[name]).add_(c.anchor[name])

    @torch.no_grad()
    def _record_importance(self, batch_size: int) -> None:
        """Add B * g^2 of this batch to the current pass's sum (a new pass restarts the sum)."""
        if self.taken % self.experience_size == 0:
            self.fisher_sum, self.fisher_batches = None, 0
        squares = {name: batch_size * p.grad.pow(2) if p.grad is not None else torch.zeros_like(p)
                   for name, p in self.net.named_parameters()}
        self.fisher_sum = squares if self.fisher_sum is None else \
            {name: self.fisher_sum[name] + s for name, s in squares.items()}
        self.fisher_batches += 1
        self.taken += batch_size

    @torch.no_grad()
    def _load_weights(self, weights: Tensors) -> None:
        """Copy `weights` (floating-point state-dict entries) into the network: the fast weights."""
        for name, t in self.net.state_dict().items():
            if name in weights:
                t.copy_(weights[name])

    # ---- state ----------------------------------------------------------------------------------
    def _learning_state(self) -> dict[str, Any]:
        """What learning changes between two consolidations."""
        return {**super().state_dict(), "reset_pending": self.reset_pending, "experience_size": self.experience_size,
                "taken": self.taken, "fisher_sum": self.fisher_sum, "fisher_batches": self.fisher_batches}

    def state_dict(self) -> dict[str, Any]:
        c = self.consolidation
        return {**self._learning_state(), "consolidation": None if c is None else dict(vars(c))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["consolidation"]
        self._load_learning_state(state, None if saved is None else
                                  Consolidation(**{k: self._copied(v) for k, v in saved.items()}))

    def episodic_state(self) -> dict[str, Any]:
        """The learning state and the (shared, immutable) consolidation: all an episode can change."""
        return {**self._learning_state(), "consolidation": self.consolidation}

    def load_episodic_state(self, state: dict[str, Any]) -> None:
        self._load_learning_state(state, state["consolidation"])

    def _load_learning_state(self, state: dict[str, Any], consolidation: Consolidation | None) -> None:
        super().load_state_dict(state)
        self.consolidation = consolidation
        self.reset_pending, self.experience_size = bool(state["reset_pending"]), state["experience_size"]
        self.taken, self.fisher_batches = int(state["taken"]), int(state["fisher_batches"])
        self.fisher_sum = None if state["fisher_sum"] is None else self._copied(state["fisher_sum"])

    def _copied(self, tensors: Tensors) -> Tensors:
        return {name: t.to(self.device, copy=True) for name, t in tensors.items()}
