"""Prototypical networks (Snell et al. 2017), usable for few-shot episodes, FSCIL and federated
reconnaissance (Hendryx et al. 2021)."""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from clbench.inference import channels_last
from clbench.learner import Context, Range
from clbench.learners.prototypes import BACKBONES, PrototypeLearner, build_encoder, generator


def prototypical_loss(support: torch.Tensor, query: torch.Tensor, loss: str = "proto",
                      margin: float = 0.5) -> torch.Tensor:
    """The episode loss for support embeddings (way x shot x D) and query embeddings (way x query x D),
    class i being row i of both.

    proto: prototypes p_c = mean of class c's support embeddings; logits = -||q - p_c||^2; the
    loss is the cross-entropy of those logits, averaged over the queries (Snell et al. 2017).
    proto-triplet: proto plus a triplet margin loss on each query, its own prototype and the nearest
    other prototype, with (non-squared) Euclidean distances d = sqrt(||q - p||^2):
    mean over queries of max(0, d(q, p_own) - min_{c != own} d(q, p_c) + margin).
    """
    way, n_query, dim = query.shape
    prototypes = support.mean(1)
    q = query.reshape(way * n_query, dim)
    d2 = (q.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)  # (way * n_query) x way
    labels = torch.arange(way, device=q.device).repeat_interleave(n_query)
    value = F.cross_entropy(-d2, labels)
    if loss == "proto-triplet":
        d = d2.clamp_min(1e-12).sqrt()
        own = F.one_hot(labels, way).bool()
        positive = d[own]
        negative = d.masked_fill(own, float("inf")).amin(1)
        value = value + F.relu(positive - negative + margin).mean()
    return value


class EpisodeSampler:
    """Draws N-way (support + query)-shot episodes from labelled data, on the data's device.

    Classes with fewer than 2 samples are left out; `way` is clamped to the number of classes left
    and `shot + query` to the smallest of them (keeping `shot`, at most per-class size - 1, and at
    least one query). Each episode: `way` distinct classes, and per class `shot + query` distinct
    samples (a random key per sample, the smallest keys win: vectorised, no Python loop).
    """

    def __init__(self, y: torch.Tensor, way: int, shot: int, query: int, gen: torch.Generator) -> None:
        classes, counts = y.unique(return_counts=True)
        keep = counts >= 2
        self.classes, self.counts = classes[keep], counts[keep]
        order = torch.argsort(y, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        self.table = torch.full((len(self.classes), int(self.counts.max()) if keep.any() else 0), -1,
                                dtype=torch.long, device=y.device)
        if keep.any():  # table[i, j] = index of the j-th sample of the i-th kept class
            within = torch.arange(int(self.counts.max()), device=y.device)
            valid = within < self.counts[:, None]
            rows = (starts[keep][:, None] + within).clamp(max=len(y) - 1)
            self.table = torch.where(valid, order[rows], self.table)
        self.way = min(way, len(self.classes))
        per_class = min(shot + query, int(self.counts.min())) if len(self.classes) else 0
        self.shot = min(shot, per_class - 1)
        self.query = per_class - self.shot
        self.gen = gen

    @property
    def usable(self) -> bool:
        """At least 2 classes of at least 2 samples: an episode has something to discriminate."""
        return self.way >= 2

    def sample(self) -> torch.Tensor:
        """Indices into the data, way x (shot + query): support first, then queries."""
        device = self.table.device
        chosen = torch.randperm(len(self.classes), generator=self.gen, device=self.gen.device)[: self.way].to(device)
        keys = torch.rand(self.way, self.table.shape[1], generator=self.gen, device=self.gen.device).to(device)
        keys = keys.masked_fill(self.table[chosen] < 0, 2.0)  # padding never wins
        picks = keys.topk(self.shot + self.query, dim=1, largest=False).indices
        return self.table[chosen].gather(1, picks)


class ProtoNet(PrototypeLearner):
    """Prototypical networks (Snell et al. 2017): a meta-trained encoder, then incremental class prototypes.

    Mergeable (federated reconnaissance, Hendryx et al. 2021) and episodic (few-shot episodes).

    Base phase (the first experience the learner sees; DESIGN: few-shot meta-train classes, FSCIL
    base session, fed-recon server classes): its batches are stored on the device; at
    `end_experience` the encoder (`backbone`: "scenario" = the scenario's backbone, or a named
    small net, e.g. "conv4" as in Snell et al., "resnet12") is meta-trained for `episodes`
    episodes, each `train_way` classes x (`train_shot` support + `train_query` query) distinct
    images drawn from the stored data (`EpisodeSampler`, a torch.Generator seeded with
    context.seed; way and shot+query clamped to what the data holds, see there; fewer than 2
    classes with 2 images: no meta-training). Loss: `prototypical_loss` (`loss` = "proto" or
    "proto-triplet" with `margin`), support and query images in one forward pass in train mode,
    Adam(`lr`), lr halved every `lr_halve_every` episodes. `episodes = 0` keeps the random encoder
    (a documented baseline). The encoder is then frozen (eval, no gradients) and the stored data
    become the base classes' prototype sums and counts, then are released.

    Afterwards every `learn` only adds embeddings to per-class sums and counts (float64): the
    prototype of a class is sum / count, i.e. n <- n + k; p <- p + (k / n)(m - p). `predict` gives
    negative squared Euclidean distances to the prototypes; classes without one score the lowest
    finite float. Each sample of an experience is stored or counted once: with the runner's epochs > 1
    the repeated passes are ignored (see PrototypeLearner), so `episodes` alone sets meta-training.

    `merge`: adds each other learner's (sums, counts) minus the (sums, counts) it had when its
    state was last loaded (see `PrototypeLearner.merge`); learners must share the encoder.
    Optional contract: `encode(x)`, `episodic_state()` / `load_episodic_state()`.
    """

    name = "protonet"

    def __init__(
        self,
        context: Context,
        *,
        backbone: BACKBONES = "scenario",
        train_way: Annotated[int, Range(ge=2)] = 20,
        train_shot: Annotated[int, Range(ge=1)] = 5,
        train_query: Annotated[int, Range(ge=1)] = 15,
        episodes: Annotated[int, Range(ge=0)] = 2000,
        lr: Annotated[float, Range(gt=0)] = 1e-3,
        lr_halve_every: Annotated[int, Range(ge=1)] = 2000,
        loss: Literal["proto", "proto-triplet"] = "proto",
        margin: Annotated[float, Range(ge=0)] = 0.5,
    ) -> None:
        super().__init__(context)
        self.way, self.shot, self.query, self.episodes = train_way, train_shot, train_query, episodes
        self.lr, self.lr_halve_every, self.loss, self.margin = lr, lr_halve_every, loss, margin
        self._setup(build_encoder(context, backbone))

    def _train_base(self, x: torch.Tensor, y: torch.Tensor) -> None:
        sampler = EpisodeSampler(y, self.way, self.shot, self.query, generator(x.device, self.context.seed))
        if self.episodes == 0:
            return
        if not sampler.usable:
            warnings.warn("protonet: no meta-training: the base experience has fewer than 2 classes with at least "
                          "2 images; the encoder stays random")
            return
        if (sampler.way, sampler.shot, sampler.query) != (self.way, self.shot, self.query):
            warnings.warn(f"protonet: base episodes clamped to {sampler.way}-way {sampler.shot}-shot "
                          f"{sampler.query}-query (asked {self.way}-way {self.shot}-shot {self.query}-query): the "
                          f"base experience has {len(sampler.classes)} classes of >= 2 images, the smallest with "
                          f"{int(sampler.counts.min())}")
        optimizer = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_halve_every, gamma=0.5)
        bar = self.context.progress_bar(range(self.episodes), f"{self.name} meta-training", unit="episode")
        for episode in bar:
            index = sampler.sample()  # way x (shot + query): support images first
            embeddings = self.encoder(channels_last(x[index.reshape(-1)])).float().view(*index.shape, -1)
            support, query = embeddings[:, : sampler.shot], embeddings[:, sampler.shot:]
            value = prototypical_loss(support, query, self.loss, self.margin)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            if episode % 10 == 0:
                bar.set_postfix(loss=f"{value.item():.3f}", refresh=False)
