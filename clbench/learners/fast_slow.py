"""Fast and slow weights for few-shot continual learning (after Wang et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch

from clbench.learner import Context, ExperienceInfo, Range, Step
from clbench.learners.finetune import Finetune
from clbench.learners.fisher import empirical_fisher

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Consolidation:
    """What the two-step consolidation leaves between experiences. Never changed in place (each
    consolidation builds a new one), so a snapshot shares it instead of copying it."""

    slow: Tensors
    """The slow weights: every floating-point entry of the network's state dict (BN statistics too).
    Their parameters are the penalty's anchor."""
    importance: Tensors
    """The online diagonal empirical Fisher of each parameter at the slow weights (empty when
    `fast_penalty = 0`)."""

    def __deepcopy__(self, memo: dict) -> Consolidation:
        return self  # immutable: sharing is safe, and restoring an episode then copies no slow weights


class FastSlow(Finetune):
    """Fast/slow weights: fast ones restart from Reptile-moved slow ones, Fisher-held there (defaults: split-digits-til +6.2 points).

    After Wang et al. 2021 ("Few-shot Continual Learning: a Brain-inspired Approach", arXiv
    2104.09034), of which only the abstract is public: a pair of fast / slow weights updated
    interdependently, the fast weights learning the task sequence without forgetting, the slow
    weights improving few-shot generalisation, through a two-step consolidation. The details below
    are this implementation's. The network, optimizer and cross-entropy step are finetune's (the
    run's backbone plus a linear head over all classes, masked to each sample's task's classes on a
    task-incremental run with `til_training = "masked"`; the optimizer state carries over between
    experiences); they hold the FAST weights theta, which `predict` uses.

    - Two-step consolidation at `end_experience`: (1) the slow weights phi move toward the fast ones,
      phi <- phi + slow_rate * (theta - phi) (`torch.lerp`, exact at 0 and 1; a Reptile-style
      interpolation), over every floating-point entry of the state dict (BN running statistics too);
      the first consolidation sets phi = theta. (2) Their importance: the diagonal empirical Fisher
      F_t = mean over the experience's samples of (d log p(y | x; phi) / d phi)^2 (p: the likelihood
      the training step maximises, task-masked where it is), from per-sample gradients
      (`clbench.learners.fisher.empirical_fisher`: torch.func vmap over chunks, eval mode) AT THE
      NEW SLOW WEIGHTS, added to the earlier ones: F <- F + F_t (online EWC, decay 1).
    - The fast weights start every experience from the slow weights (the first `learn` after a
      consolidation sets theta = phi: the next experience, an FSCIL session, or a few-shot episode's
      support set, learned outside any experience) and train under the penalty
      P(theta) = fast_penalty / 2 * sum_i F_i (theta_i - phi_i)^2, applied by its
      proximal step after each optimizer step on the cross-entropy:
      theta_i <- phi_i + (theta_i - phi_i) / (1 + lr * fast_penalty * F_i) (lr: the optimizer's).
      Unlike adding P's gradient, this is stable for any fast_penalty * F.
    - Why the anchor is phi: the reset point and the anchor are one point, so they never pull apart
      (anchored at the previous fast weights, as before issue 22, the proximal step dragged theta
      away from the phi it had just been reset to, at every step). What the pair agreed on, the slow
      weights, is what is protected, with the Fisher measured where it protects. `slow_rate = 1`
      makes phi the last fast weights: plain online EWC (Schwarz et al. 2018, decay 1).
    - The Fisher needs the experience's samples at its end: the learner keeps the first
      `fisher_samples` it is given in the experience (at most one pass; the runner shuffles, so a
      uniform subset), as the training step received them (augmented), and drops them at the end
      (they are part of `state_dict` until then, so a resume is exact). A separate pass rather than
      per-sample gradients during training, because the Fisher belongs at phi, which exists only
      once the experience is over; the training steps stay finetune's, and the cost is one
      forward/backward per kept sample per experience.

    Hyper-parameters (benchmarks/fast_slow_consolidation.py, seeds 0-9, final accuracy against the
    same learner with fast_penalty = 0): split-digits-til +6.2 +- 1.3 points (98.7 against 92.5;
    single-head training +20.0 +- 5.7), FSCIL-like digits +1.3 +- 1.0 (mini-ImageNet FSCIL at a CPU
    budget, seeds 0-2: +4.7 +- 1.0, base classes kept, novel ones not learned); no gain
    class-incremental (split-digits +0.8 +- 1.3), a loss online (split-digits-online -3.0 +- 1.8).
    - fast_penalty = 1e5: from {1e2, 1e3, 1e4, 1e5, 1e6} on split-digits-til (seeds 0-2), a plateau
      from 1e4 to 1e6. It is large because the empirical Fisher of a network that fits its data is
      small (a per-sample gradient vanishes as p(y | x) -> 1).
    - slow_rate = 0.5: 0.3, 0.5 and 0.7 within a point of each other at fast_penalty >= 1e5 there;
      1 (online EWC, no slow weights) needs fast_penalty 1e6 and reaches only 95 (masked) / 80
      (single-head) against 99 / 87.
    - fisher_samples = 1000: every sample of a split-digits experience (about 360); elsewhere a bound
      on the memory kept (inputs as the step receives them) and on the Fisher pass, which costs about
      a per-sample backward pass per kept sample (for a conv net ~10x its share of a batched one: on
      split-digits-online the pass takes most of the training time).

    `fast_penalty = 0` computes no Fisher and keeps no samples; `fast_penalty = 0, slow_rate = 1`
    is exactly finetune. Without task boundaries nothing is ever consolidated: plain finetune.
    `episodic_state()` is what learning changes between consolidations (fast weights, optimizer, the
    kept samples) plus a reference to the immutable `Consolidation`.

    Departures from the paper's description (its equations and schedules are not public; each of
    these is our choice):
    - the fast weights' consolidation is online EWC with the diagonal empirical Fisher, applied as a
      proximal step, anchored at the slow weights;
    - the fast weights are reset to the slow weights at the start of every experience;
    - the slow update is one interpolation step per experience (no inner meta-learning loop);
    - the slow weights start as the first experience's fast weights, not the random initialisation;
    - the slow weights never predict: the fast weights do, always.
    """

    name = "fast-slow"

    def __init__(self, context: Context, *, fast_penalty: Annotated[float, Range(ge=0)] = 1e5,
                 slow_rate: Annotated[float, Range(ge=0, le=1)] = 0.5,
                 fisher_samples: Annotated[int, Range(ge=1)] = 1000, **finetune: Any) -> None:
        super().__init__(context, **finetune)
        self.fast_penalty, self.slow_rate, self.fisher_samples = fast_penalty, slow_rate, fisher_samples
        self.consolidation: Consolidation | None = None
        self.reset_pending = False
        """Whether the next `learn` first sets the fast weights to the slow ones."""
        self.room = 0
        """How many more samples of the experience in progress to keep for its Fisher (0 outside one)."""
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        """The kept (inputs, labels) of the experience in progress."""

    # ---- the contract -------------------------------------------------------------------------
    def begin_experience(self, info: ExperienceInfo) -> None:
        self.room = min(self.fisher_samples, info.n_samples) if self.fast_penalty > 0 else 0
        self.kept = []

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> Step:
        if self.reset_pending:
            self._load_weights(self.consolidation.slow)
            self.reset_pending = False
        if self.room:
            self.kept.append((x[: self.room].detach().clone(), y[: self.room].detach().clone()))
            self.room -= len(self.kept[-1][1])
        step = super().learn(x, y, task)
        self._pull_to_anchor()
        return step

    def end_experience(self, info: ExperienceInfo) -> None:
        fast = {name: t.detach().clone() for name, t in self.net.state_dict().items() if t.is_floating_point()}
        before = self.consolidation
        # step 1: the slow weights move toward the fast ones
        slow = fast if before is None else {name: torch.lerp(before.slow[name], t, self.slow_rate)
                                            for name, t in fast.items()}
        importance = before.importance if before else {}
        if self.kept:  # step 2: their importance, measured at them (samples are kept when fast_penalty > 0)
            x, y = (torch.cat(parts) for parts in zip(*self.kept))
            new = empirical_fisher(self.net, slow, x, y, self.task_mask)
            importance = {name: importance[name] + f for name, f in new.items()} if importance else new
        self.consolidation = Consolidation(slow, importance)
        self.reset_pending = True
        self.room, self.kept = 0, []

    # ---- the pieces -----------------------------------------------------------------------------
    @torch.no_grad()
    def _pull_to_anchor(self) -> None:
        """The penalty's proximal step: theta <- phi + (theta - phi) / (1 + lr * fast_penalty * F)."""
        c = self.consolidation
        if c is None or not c.importance:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        for name, p in self.net.named_parameters():
            anchor = c.slow[name]
            p.sub_(anchor).div_(1 + lr * self.fast_penalty * c.importance[name]).add_(anchor)

    @torch.no_grad()
    def _load_weights(self, weights: Tensors) -> None:
        """Copy `weights` (floating-point state-dict entries) into the network: the fast weights."""
        for name, t in self.net.state_dict().items():
            if name in weights:
                t.copy_(weights[name])

    # ---- state ----------------------------------------------------------------------------------
    def _learning_state(self) -> dict[str, Any]:
        """What learning changes between two consolidations (the kept samples as one pair of tensors)."""
        kept = [torch.cat(parts) for parts in zip(*self.kept)] if self.kept else None
        return {**super().state_dict(), "reset_pending": self.reset_pending, "room": self.room, "kept": kept}

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
        self.reset_pending, self.room = bool(state["reset_pending"]), int(state["room"])
        kept = state["kept"]
        self.kept = [] if kept is None else [tuple(t.to(self.device, copy=True) for t in kept)]

    def _copied(self, tensors: Tensors) -> Tensors:
        return {name: t.to(self.device, copy=True) for name, t in tensors.items()}
