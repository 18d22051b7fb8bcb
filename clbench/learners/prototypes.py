"""Shared prototype arithmetic for the frozen-encoder, nearest-prototype learners (`protonet`,
`simpleshot`): per-class feature sums and counts, incremental updates, scores, federated merges of
(sum, count) deltas, the small episodic state, and the life cycle "train the encoder on the first
experience, then freeze it and only update prototypes".
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from clbench.errors import ClbenchError
from clbench.inference import channels_last, inference_copy
from clbench.learner import ExperienceInfo, Learner

BACKBONES = Literal["scenario", "conv4", "resnet12", "resnet32", "reduced_resnet18", "small_cnn", "mlp"]
"""The encoder of a prototype learner, built by `context.backbone(name)` for the scenario's images:
"scenario" is the scenario's own `backbone` setting (what every image learner of the run gets);
"conv4" (Snell et al.) and "resnet12" are the few-shot literature's; conv4 and resnet12 need
images of at least 16 x 16."""


def build_encoder(context: Any, backbone: str) -> nn.Module:
    """`context.backbone(None if backbone == "scenario" else backbone)`."""
    return context.backbone(None if backbone == "scenario" else backbone)


LOWEST_SCORE = torch.finfo(torch.float32).min
"""The score of a class that holds no prototype: the lowest finite float32 (never -inf or NaN)."""

ENCODE_CHUNK = 512
"""Images encoded per forward pass when a learner encodes many at once (its stored base data)."""


def squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||x_i - c_j||^2 for N x D `x` and K x D `centres`, in float64 (N x K, clamped at 0).

    Uses ||x||^2 - 2 x.c + ||c||^2 (no N x K x D intermediate); float64 keeps the cancellation
    harmless for the feature sizes of the small nets (<= a few thousand dimensions).
    """
    x, centres = x.double(), centres.double()
    d = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centres.T + centres.pow(2).sum(1)
    return d.clamp_min_(0.0)


class PrototypeMemory:
    """Per class a feature sum and a count (float64), and the "origin" they had when last loaded.

    Prototype of class c = sums[c] / counts[c]. Adding k samples of mean m to a class with n samples
    and prototype p is exactly the incremental update n <- n + k; p <- p + (k / n)(m - p), order-
    independent up to float64 rounding. `origin_*` is what the memory held when its state was
    last loaded (zero for a fresh memory): `delta()` = what was learned since, which is what a
    federated merge adds (count-weighted averaging that never double-counts the loaded samples).
    """

    def __init__(self, num_classes: int, dim: int, device: torch.device) -> None:
        self.num_classes, self.dim, self.device = num_classes, dim, device
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.sums, self.counts = zeros(num_classes, dim), zeros(num_classes)
        self.origin_sums, self.origin_counts = zeros(num_classes, dim), zeros(num_classes)

    # ---- arithmetic ---------------------------------------------------------------------------
    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add N x D features with their N labels to the class sums and counts."""
        labels = labels.to(self.device, torch.long)
        self.sums.index_add_(0, labels, features.to(self.device, torch.float64))
        self.counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64, device=self.device))

    @property
    def seen(self) -> torch.Tensor:
        """Boolean mask of the classes holding a prototype (count > 0)."""
        return self.counts > 0

    def means(self) -> torch.Tensor:
        """The prototypes, C x D float64 (zero rows for classes never seen)."""
        return self.sums / self.counts.clamp(min=1).unsqueeze(1)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Negative squared Euclidean distances to the prototypes, N x C float32; classes without a
        prototype score `LOWEST_SCORE`."""
        return place(-squared_distances(features, self.means()), self.seen, all_seen=True)

    # ---- state ----------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.clone(), "counts": self.counts.clone(),
                "origin_sums": self.origin_sums.clone(), "origin_counts": self.origin_counts.clone()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Load sums and counts; they become the new origin (the stored origin is not restored)."""
        self._check_shape(state)
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
        self.origin_sums.copy_(self.sums)
        self.origin_counts.copy_(self.counts)

    def episodic_state(self) -> dict[str, torch.Tensor]:
        """Just the sums and counts (copies): what an episode's support set changes."""
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_episodic_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `episodic_state` returned (the origin is left as it is)."""
        self._check_shape(state)
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])

    def _check_shape(self, state: dict[str, torch.Tensor]) -> None:
        sums, counts = tuple(state["sums"].shape), tuple(state["counts"].shape)
        if sums != (self.num_classes, self.dim) or counts != (self.num_classes,):
            raise ClbenchError(f"prototype state has sums {sums} and counts {counts}; this learner holds "
                               f"({self.num_classes}, {self.dim}) and ({self.num_classes},): it was saved for "
                               "another scenario or encoder")

    # ---- federated merge ------------------------------------------------------------------------
    def delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums - origin_sums, counts - origin_counts): what was learned since the last load."""
        return self.sums - self.origin_sums, self.counts - self.origin_counts

    def has_delta(self) -> bool:
        return bool((self.counts != self.origin_counts).any()) or bool((self.sums != self.origin_sums).any())

    def absorb(self, deltas: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Add other memories' deltas to this one's sums and counts."""
        for sums, counts in deltas:
            self.sums += sums.to(self.device)
            self.counts += counts.to(self.device)


def place(scores: torch.Tensor, seen: torch.Tensor, all_seen: bool = False) -> torch.Tensor:
    """Scores over all C classes (float32) from scores over the seen classes, `LOWEST_SCORE` elsewhere.

    `scores` is N x K with K = seen.sum(), or (`all_seen`) already N x C with unseen columns to mask.
    """
    if all_seen:
        return scores.float().masked_fill(~seen, LOWEST_SCORE)
    out = torch.full((scores.shape[0], seen.numel()), LOWEST_SCORE, dtype=torch.float32, device=scores.device)
    out[:, seen] = scores.float()
    return out


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on `device` (random draws stay on the device), seeded; CPU where the device has none."""
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except RuntimeError:
        return torch.Generator().manual_seed(seed)


class PrototypeLearner(Learner):
    """Base class: an encoder trained on the FIRST experience the learner sees, then frozen; every
    later sample only updates a `PrototypeMemory`; predictions are negative squared Euclidean
    distances to the prototypes.

    Life cycle:
    - base phase (before the first `end_experience`): `learn` stores the batches on the device;
      `end_experience` trains the encoder on them (`_train_base`, the subclass's method), freezes it
      (eval mode, no gradients), fits the feature transform (`_fit_transform`), turns the stored data
      into prototype sums/counts (so base classes are predictable) and releases the data. Without
      task boundaries (no `end_experience`), the first `predict`, `encode`, `merge` or
      `episodic_state` closes the base phase the same way.
    - afterwards: `learn` adds features to the sums/counts (any batch size, one pass: online).
    - each sample of an experience counts once: after `begin_experience(info)`, `learn` takes the
      first `info.n_samples` samples it is fed and ignores the rest (the runner's epochs > 1 feed the
      same samples again), so the base data are stored once, whatever the runner's epochs; the
      learner's own `epochs`/`episodes` is what base training uses. Without task boundaries (no
      `begin_experience`) every sample fed is taken.

    `learn` and `predict` take images (N x C x H x W, encoded by the frozen encoder in eval mode under
    no_grad) or, once the base phase is over, `encode()` outputs (N x D): the few-shot runner may
    encode each image once. Subclasses set the hyper-parameters, call `_setup(encoder)`, and may
    override `_train_base`, `_fit_transform`, `_transform`, `_scores`, `_extra_state`,
    `_load_extra_state` and `_merge_conflict`.
    """

    wants = "images"
    online = True
    mergeable = True
    needs_task_ids = False

    def _setup(self, encoder: nn.Module) -> None:
        self.encoder = encoder.to(self.device, memory_format=torch.channels_last)  # faster convolutions
        self._frozen: nn.Module | None = None
        """The frozen encoder's `inference_copy` (batch norms folded, channels-last): what encodes once
        the base phase is over; `self.encoder` keeps the trained weights and the state-dict keys."""
        self.memory = PrototypeMemory(self.context.num_classes, int(encoder.out_dim), self.device)
        self.base_done = False
        self.base_classes = torch.zeros(self.context.num_classes, dtype=torch.bool, device=self.device)
        """The classes holding prototypes when the base phase ended (its classes)."""
        self._pending_x: list[torch.Tensor] = []
        self._pending_y: list[torch.Tensor] = []
        self._quota: int | None = None
        """Samples of the current experience still to take (None: no limit, outside an experience)."""

    # ---- subclass hooks -------------------------------------------------------------------------
    def _train_base(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Train `self.encoder` on the base data (gradients enabled; called once)."""

    def _fit_transform(self, features: torch.Tensor, y: torch.Tensor) -> None:
        """Fit the feature transform on the frozen encoder's base features (called once)."""

    def _transform(self, features: torch.Tensor) -> torch.Tensor:
        """The feature transform applied before prototypes and queries meet (identity here)."""
        return features

    def _scores(self, features: torch.Tensor) -> torch.Tensor:
        """Scores of transformed features: negative squared distances to the prototypes."""
        return self.memory.scores(features)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _merge_conflict(self, other: PrototypeLearner) -> str | None:
        """Why `other`'s prototypes do not live in this learner's feature space (None if they do)."""
        mine, theirs = self.encoder.state_dict(), other.encoder.state_dict()
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine):
            return "their encoders differ (clients must start from the server's state: load_state_dict it first)"
        return None

    # ---- the contract ---------------------------------------------------------------------------
    def begin_experience(self, info: ExperienceInfo) -> None:
        self._quota = info.n_samples

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if self._quota is not None:
            x, y = x[: self._quota], y[: self._quota]
            self._quota -= len(y)
        if not len(y):
            return
        if not self.base_done:
            if x.dim() == 2:
                raise ClbenchError(f"learner '{self.name}': the first (base) experience must be given as images, "
                                   "not embeddings: the encoder is trained on it")
            self._pending_x.append(x.detach().clone())
            self._pending_y.append(y.detach().to(self.device, torch.long).clone())
            return
        self.memory.add(self._transform(self._features(x)), y)

    def end_experience(self, info: ExperienceInfo) -> None:
        self._quota = None
        self._finish_base()

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        self._finish_base()
        return self._scores(self._transform(self._features(x)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's embedding of images, N x D float32 (eval mode, no gradients); before the
        feature transform, which `learn`/`predict` apply to 2-D inputs as they do to images."""
        self._finish_base()
        return self._encode(x)

    # ---- optional contract: episodes and federated merge -----------------------------------------
    def episodic_state(self) -> dict[str, Any]:
        """The prototype sums and counts only: what learning an episode's support set changes."""
        self._finish_base()
        return self.memory.episodic_state()

    def load_episodic_state(self, state: dict[str, Any]) -> None:
        self.memory.load_episodic_state(state)

    def merge(self, others: list[Learner]) -> None:
        """Federated reconnaissance: add each other learner's (sums - origin_sums, counts - origin_counts)
        to this learner's sums and counts. Clients that loaded the server's state contribute only what
        they learned since (a class coming back is never double-counted); the result is the count-
        weighted average of prototypes, independent of the order; an untrained learner adds nothing.
        All checks run before anything is added (an error leaves this learner unchanged)."""
        self._finish_base()
        for other in others:
            where = f"learner '{self.name}' cannot merge"
            if type(other) is not type(self):
                raise ClbenchError(f"{where} a '{getattr(other, 'name', type(other).__name__)}' learner "
                                   f"({type(other).__name__}): only learners of the same kind merge")
            if other is self:
                raise ClbenchError(f"{where} itself")
            if (other.memory.num_classes, other.memory.dim) != (self.memory.num_classes, self.memory.dim):
                raise ClbenchError(f"{where} a learner with {other.memory.num_classes} classes x {other.memory.dim}-d "
                                   f"features into one with {self.memory.num_classes} x {self.memory.dim}-d "
                                   "(different scenario or encoder output size)")
            if other._pending_x:
                raise ClbenchError(f"{where} a learner still in its base experience (call end_experience first)")
            if other.memory.has_delta():
                conflict = self._merge_conflict(other)
                if conflict:
                    raise ClbenchError(f"{where} these learners: {conflict}")
        self.memory.absorb([other.memory.delta() for other in others])

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Encoder weights, prototype sums/counts and their origin, whether the base phase is over,
        any base data still pending (empty after the first end_experience) and the samples the current
        experience may still give (-1: no limit); no optimizer (the encoder is frozen once trained).
        Loads with torch.load(weights_only=True)."""
        pending_x = torch.cat(self._pending_x) if self._pending_x else torch.zeros(0)
        pending_y = torch.cat(self._pending_y) if self._pending_y else torch.zeros(0, dtype=torch.long)
        return {"encoder": self.encoder.state_dict(), "memory": self.memory.state(), "base_done": self.base_done,
                "base_classes": self.base_classes.clone(),
                "pending_x": pending_x, "pending_y": pending_y, "quota": -1 if self._quota is None else self._quota,
                **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state; the loaded sums/counts become this learner's merge origin (a client given
        the server's state then contributes only what it learns afterwards)."""
        self.encoder.load_state_dict(state["encoder"])
        self.memory.load(state["memory"])
        self.base_done = bool(state["base_done"])
        self.base_classes.copy_(state["base_classes"])
        self._freeze(self.base_done)
        pending_x, pending_y = state["pending_x"], state["pending_y"]
        self._pending_x = [pending_x.to(self.device)] if len(pending_x) else []
        self._pending_y = [pending_y.to(self.device)] if len(pending_y) else []
        quota = int(state.get("quota", -1))  # absent in states saved before it existed: no limit
        self._quota = None if quota < 0 else quota
        self._load_extra_state(state)

    # ---- internals ------------------------------------------------------------------------------
    def _freeze(self, frozen: bool) -> None:
        self.encoder.requires_grad_(not frozen)
        if frozen:
            self.encoder.eval()
        self._frozen = inference_copy(self.encoder) if frozen else None

    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            return torch.zeros(0, self.memory.dim, device=self.device)
        model = self.encoder.eval() if self._frozen is None else self._frozen
        return torch.cat([model(channels_last(chunk)).float() for chunk in x.split(ENCODE_CHUNK)])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of images (4-D) or already-embedded inputs (2-D), float32."""
        if x.dim() == 2:
            if x.shape[1] != self.memory.dim:
                raise ClbenchError(f"learner '{self.name}': got {x.shape[1]}-d embeddings; its encoder gives "
                                   f"{self.memory.dim}-d (pass images or encode() outputs)")
            return x.float()
        return self._encode(x)

    def _finish_base(self) -> None:
        """Close the base phase: train the encoder on the stored data, freeze it, fit the transform,
        turn the data into prototypes, release it. A no-op once done or while nothing is stored."""
        if self.base_done or not self._pending_x:
            return
        x, y = torch.cat(self._pending_x), torch.cat(self._pending_y)
        self._pending_x, self._pending_y = [], []
        if any(p.requires_grad for p in self.encoder.parameters()):  # e.g. "flatten" has nothing to train
            with torch.enable_grad():
                self.encoder.train()
                self._train_base(x, y)
        self._freeze(True)
        features = self._encode(x)
        del x
        self._fit_transform(features, y)
        self.memory.add(self._transform(features), y)
        self.base_classes = self.memory.seen.clone()
        self.base_done = True
