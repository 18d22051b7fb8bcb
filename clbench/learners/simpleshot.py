"""SimpleShot (Wang et al. 2019): a supervised base-trained encoder, a feature transform and the
nearest class mean; optionally the transductive refinement of Ziko et al. (2021)'s baseline."""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.inference import channels_last
from clbench.learner import Context, Range
from clbench.learners.prototypes import (BACKBONES, PrototypeLearner, PrototypeMemory, build_encoder, generator,
                                         place, squared_distances)


def transform_features(features: torch.Tensor, kind: str, base_mean: torch.Tensor) -> torch.Tensor:
    """SimpleShot's feature transforms: "none"; "l2": f / ||f||; "cl2n": (f - base mean) / ||f - base mean||."""
    if kind == "none":
        return features
    if kind == "cl2n":
        features = features - base_mean.to(features.dtype)
    return F.normalize(features, dim=1)


def transductive_scores(queries: torch.Tensor, memory: PrototypeMemory, steps: int,
                        candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of a whole query batch after the transductive refinement (all in float64), over the
    candidate classes (`candidates`, a boolean mask; default: every class holding a prototype):

    1. shift the queries by (support mean - query mean), the support mean being the mean of the
       candidates' prototypes (class-balanced; equal to the mean of the support samples when every
       class has as many of them, as in an N-way K-shot episode);
    2. `steps` K-means iterations started from the prototypes: assign each query to its nearest
       centroid, then centroid_c = (support sum_c + sum of the queries assigned to c) /
       (support count_c + number assigned). Support samples keep their labels (they always count for
       their own class, with their counts), so only the queries move;
    3. negative squared distances from the shifted queries to the final centroids.
    The memory is not changed. Classes that are not candidates (or hold no prototype) score the
    lowest finite float.
    """
    seen = memory.seen if candidates is None else memory.seen & candidates
    if not seen.any():
        return memory.scores(queries)
    sums, counts = memory.sums[seen], memory.counts[seen]
    centroids = sums / counts.unsqueeze(1)
    q = queries.double()
    q = q + (centroids.mean(0) - q.mean(0))
    for _ in range(steps):
        assigned = F.one_hot(squared_distances(q, centroids).argmin(1), len(centroids)).double()  # N x K
        centroids = (sums + assigned.T @ q) / (counts + assigned.sum(0)).unsqueeze(1)
    return place(-squared_distances(q, centroids), seen)


class SimpleShot(PrototypeLearner):
    """SimpleShot (Wang et al. 2019): a base-trained encoder, CL2N features, nearest class mean.

    The decoupled baseline; mergeable like protonet; optionally transductive (Ziko et al. 2021).

    Base phase (the first experience the learner sees): its batches are stored on the device; at
    `end_experience` the encoder (`backbone`: "scenario" = the scenario's backbone, or a named small
    net such as "conv4", "resnet12") plus a linear head over that experience's classes are trained
    with cross-entropy for `epochs` passes over the stored data (shuffled by a torch.Generator
    seeded with context.seed, mini-batches of `batch_size`, a last batch of one sample skipped
    because of batch norm), SGD (`momentum`, nesterov off) or Adam with
    `lr` and `weight_decay`, the lr annealed by a cosine over all steps. `epochs = 0` or fewer than
    two base classes: no training (a random encoder). The head is then dropped, the encoder frozen
    (eval, no gradients), the base feature mean computed once from the stored data, and the data
    become the base classes' prototypes (of transformed features), then are released. The data are
    stored once: `epochs` here is what base training uses; the runner's epochs only feed the same
    samples again, which are ignored (each sample of an experience counts once, see PrototypeLearner).

    Features: `transform` "none", "l2" (L2-normalised) or "cl2n" (minus the base-class feature mean,
    then L2-normalised; Wang et al. 2019's best). Prototypes = mean of transformed features (not
    re-normalised); scores = negative squared Euclidean distances; classes without a prototype score
    the lowest finite float. `encode()` returns features before the transform; 2-D inputs to
    `learn`/`predict` are such features.

    `transductive = True` (Ziko et al. 2021's transductive baseline, METHODS.md): `predict` treats
    the whole batch it is given as the query set and refines the prototypes by `kmeans_steps`
    K-means steps with support labels fixed (see `transductive_scores`; with the default "cl2n"
    that is: centre by the base mean, L2-normalise, shift queries by support mean - query mean,
    K-means from the prototypes). Predictions then depend on the batch (the runner's evaluation
    batch, or the few-shot runner's query set). `transductive_classes` says which classes the
    refinement runs over: "all" holding a prototype (FSCIL: base and novel classes are candidates),
    or "novel": only the classes first learned after the base phase (few-shot episodes: exactly the
    episode's classes; the base classes' prototypes would otherwise pull the shift and the queries
    away), the other classes then scoring the lowest finite float; with no novel class yet, all.
    """

    name = "simpleshot"

    def __init__(
        self,
        context: Context,
        *,
        backbone: BACKBONES = "scenario",
        epochs: Annotated[int, Range(ge=0)] = 1,
        lr: Annotated[float, Range(gt=0)] = 0.1,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        weight_decay: Annotated[float, Range(ge=0)] = 5e-4,
        batch_size: Annotated[int, Range(ge=2)] = 128,
        transform: Literal["none", "l2", "cl2n"] = "cl2n",
        transductive: bool = False,
        kmeans_steps: Annotated[int, Range(ge=0)] = 10,
        transductive_classes: Literal["all", "novel"] = "all",
    ) -> None:
        super().__init__(context)
        self.epochs, self.lr, self.optimizer, self.momentum = epochs, lr, optimizer, momentum
        self.weight_decay, self.batch_size, self.transform = weight_decay, batch_size, transform
        self.transductive, self.kmeans_steps = transductive, kmeans_steps
        self.transductive_classes = transductive_classes
        self._setup(build_encoder(context, backbone))
        self.base_mean = torch.zeros(self.memory.dim, device=self.device)

    # ---- base training and the transform ---------------------------------------------------------
    def _train_base(self, x: torch.Tensor, y: torch.Tensor) -> None:
        classes = y.unique()
        if self.epochs == 0:
            return
        if len(classes) < 2:
            warnings.warn("simpleshot: no base training: the base experience holds a single class; the encoder "
                          "stays random")
            return
        lookup = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long, device=y.device)
        lookup[classes] = torch.arange(len(classes), device=y.device)
        head = nn.Linear(self.memory.dim, len(classes)).to(self.device)
        params = [*self.encoder.parameters(), *head.parameters()]
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(y) / self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        gen = generator(x.device, self.context.seed)
        for _ in self.context.progress_bar(range(self.epochs), f"{self.name} base training", unit="epoch"):
            order = torch.randperm(len(y), generator=gen, device=gen.device).to(x.device)
            for batch in order.split(self.batch_size):
                if len(batch) > 1:
                    value = F.cross_entropy(head(self.encoder(channels_last(x[batch])).float()), lookup[y[batch]])
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                schedule.step()

    def _fit_transform(self, features: torch.Tensor, y: torch.Tensor) -> None:
        self.base_mean = features.mean(0)

    def _transform(self, features: torch.Tensor) -> torch.Tensor:
        return transform_features(features, self.transform, self.base_mean)

    def _scores(self, features: torch.Tensor) -> torch.Tensor:
        if self.transductive:
            candidates = None
            if self.transductive_classes == "novel" and (self.memory.seen & ~self.base_classes).any():
                candidates = ~self.base_classes
            return transductive_scores(features, self.memory, self.kmeans_steps, candidates)
        return self.memory.scores(features)

    # ---- state and merge ------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"base_mean": self.base_mean.clone()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.base_mean = state["base_mean"].to(self.device, torch.float32).clone()

    def _merge_conflict(self, other: PrototypeLearner) -> str | None:
        assert isinstance(other, SimpleShot)
        if other.transform != self.transform:
            return f"their feature transforms differ ('{self.transform}' and '{other.transform}')"
        if self.transform == "cl2n" and not torch.equal(self.base_mean, other.base_mean.to(self.device)):
            return "their CL2N base feature means differ (clients must start from the server's state)"
        return super()._merge_conflict(other)
