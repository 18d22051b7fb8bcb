"""The discrete key-value bottleneck (Träuble et al., ICML 2023) on frozen features."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.errors import ClbenchError
from clbench.learner import Context, Learner, Range
from clbench.learners.task_heads import TaskMask

_SEED_OFFSET = 0x6B76627474  # "kvbtt": the learner's own draws never repeat the runner's
LAPLACE_EPS = 1e-5
"""Laplace smoothing of the EMA key counts (the official implementation's eps)."""
DEAD_FACTOR = 0.1
"""A key is dead when its EMA count falls below DEAD_FACTOR x (batch / keys), a tenth of an even share of
the batch (the official `threshold_factor`); it is then re-sampled from the batch and given an even share."""
KMEANS_ITERATIONS = 10
DISTANCE_CHUNK = 2**25
"""Distances computed at once (codebooks x queries x keys): bounds the memory of a nearest-key search."""


def project(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """N x D features through each codebook's projection (C x D x d): C x N x d queries."""
    return torch.einsum("nd,cdk->cnk", x.flatten(1).float(), projection)


def nearest_keys(z: torch.Tensor, keys: torch.Tensor, k: int = 1, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Per codebook, the indices (C x N x k) of the `k` keys (C x P x d) nearest each query (C x N x d),
    nearest first, among the `allowed` ones (C x P, boolean) if given; batched over codebooks, chunked
    over queries so that at most `DISTANCE_CHUNK` distances exist at once."""
    squared = keys.pow(2).sum(-1)  # ||z||^2 is the same for every key of a query: left out
    if allowed is not None:
        squared = squared.masked_fill(~allowed, float("inf"))
    step = max(1, DISTANCE_CHUNK // (keys.shape[0] * keys.shape[1]))
    found = []
    for part in z.split(step, dim=1):
        distance = torch.baddbmm(squared.unsqueeze(1), part, keys.transpose(1, 2), alpha=-2.0)  # C x n x P
        found.append(distance.argmin(2, keepdim=True) if k == 1 else distance.topk(k, dim=2, largest=False).indices)
    return torch.cat(found, dim=1)


def cluster_sums(z: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query (C x N x d) assigned to its nearest key: per key, the number of queries (C x P) and
    their sum (C x P x d), by one scatter over every codebook."""
    nearest = nearest_keys(z, keys)[..., 0]  # C x N
    counts = torch.zeros_like(keys[..., 0]).scatter_add_(1, nearest, torch.ones_like(z[..., 0]))
    sums = torch.zeros_like(keys).scatter_add_(1, nearest.unsqueeze(-1).expand_as(z), z)
    return counts, sums


def smoothed(counts: torch.Tensor, eps: float = LAPLACE_EPS) -> torch.Tensor:
    """Laplace-smoothed counts (C x P): (n + eps) / (total + P eps) x total, per codebook."""
    total = counts.sum(-1, keepdim=True)
    return (counts + eps) / (total + counts.shape[-1] * eps) * total


def ema_step(keys_avg: torch.Tensor, counts: torch.Tensor, z: torch.Tensor, keys: torch.Tensor,
             decay: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of EMA vector quantisation on a batch of queries z (C x N x d): assign each query to its
    nearest key; counts <- decay counts + (1 - decay) batch counts; key sums likewise; keys = key sums /
    smoothed counts. Returns (keys, keys_avg, counts)."""
    batch_counts, batch_sums = cluster_sums(z, keys)
    counts = decay * counts + (1 - decay) * batch_counts
    keys_avg = decay * keys_avg + (1 - decay) * batch_sums
    return keys_avg / smoothed(counts).unsqueeze(-1), keys_avg, counts


class KVBottleneck(Learner):
    """Discrete key-value bottleneck (Träuble 2023); floats: codebooks x (keys x (key_dim + classes) + D x key_dim).

    The memory in floats, D being the feature dimension: 256 x (4096 x (14 + 10) + 512 x 14), about 100 MB,
    at the defaults with 10 classes and 512-d features (a linear decoder adds (codebooks x classes + 1) x
    classes); `clbench run` reports each run's state size.

    Each of `codebooks` codebooks projects the frozen feature by a fixed random Gaussian matrix
    (columns L2-normalised) to `key_dim` dimensions and fetches the values of its `topk` nearest
    of `keys` keys. Values have one entry per class and start at zero; `decoder = "mean"` scores
    are the mean of the fetched values over codebooks (and topk), no parameters (the paper's);
    `"linear"` is a linear layer on the codebooks' (topk-averaged) values, concatenated.

    Keys: random Gaussian (`key_init = "random"`) or k-means (10 Lloyd iterations from random samples,
    `"kmeans"`) on the initialisation set the runner gives `initialise` (the scenario's `init_set`: the
    first experience without labels, or another dataset), then `init_epochs` epochs of EMA vector
    quantisation over it in shuffled batches of `init_batch_size` (`decay`, Laplace-smoothed counts;
    a key whose EMA count falls under a tenth of an even share of the batch is re-sampled from the
    batch with an even share), then frozen. A learner never given `initialise` keeps its initial keys.

    Continual phase, task-free and online: only the fetched values (and a linear decoder) learn, by
    SGD (`lr`) on the label-smoothed cross-entropy with the gradient's global norm clipped to
    `grad_clip` (0: off); task-incremental with `til_training = "masked"`, the cross-entropy and its
    smoothing are over each sample's task's classes (`clbench.learners.task_heads.TaskMask`; with the
    mean decoder only those entries of a fetched value move). At prediction, keys never fetched in
    training are masked out (each codebook fetches its nearest trained keys), so untouched zero values
    do not dilute the vote. Search, gathers and updates are batched over codebooks (one gather, one
    scatter per step).
    """

    name = "kv-bottleneck"
    wants = "features"
    online = True

    def __init__(
        self,
        context: Context,
        *,
        codebooks: Annotated[int, Range(ge=1)] = 256,
        keys: Annotated[int, Range(ge=1)] = 4096,
        key_dim: Annotated[int, Range(ge=1)] = 14,
        topk: Annotated[int, Range(ge=1)] = 1,
        decoder: Literal["mean", "linear"] = "mean",
        key_init: Literal["random", "kmeans"] = "random",
        init_epochs: Annotated[int, Range(ge=0)] = 10,
        init_batch_size: Annotated[int, Range(ge=1)] = 256,
        decay: Annotated[float, Range(gt=0, lt=1)] = 0.95,
        lr: Annotated[float, Range(gt=0)] = 0.3,
        grad_clip: Annotated[float, Range(ge=0)] = 1.0,
        label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.1,
    ) -> None:
        super().__init__(context)
        if topk > keys:
            raise ClbenchError(f"learner '{self.name}': topk={topk} is larger than keys={keys}; give topk <= keys")
        if key_dim > context.feature_dim:
            raise ClbenchError(f"learner '{self.name}': key_dim={key_dim} is larger than the feature dimension "
                               f"{context.feature_dim}; give key_dim <= {context.feature_dim}")
        generator = torch.Generator().manual_seed(context.seed + _SEED_OFFSET)
        projection = F.normalize(torch.randn(codebooks, context.feature_dim, key_dim, generator=generator), dim=1)
        initial_keys = torch.randn(codebooks, keys, key_dim, generator=generator)
        self.bottleneck = _Bottleneck(projection, initial_keys, context.num_classes).to(context.device)
        self.decoder = nn.Linear(codebooks * context.num_classes, context.num_classes).to(context.device) \
            if decoder == "linear" else None
        self.task_mask = TaskMask(context)

    # ---- initialisation ------------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Fit the keys to the unlabelled features `x` (N x D), then freeze them (see the class doc)."""
        b, cfg = self.bottleneck, self.config
        if not len(x):
            raise ClbenchError(f"learner '{self.name}': the initialisation set is empty")
        generator = torch.Generator().manual_seed(self.context.seed + _SEED_OFFSET + 1)
        batch = min(cfg["init_batch_size"], len(x))
        keys, counts = b.keys.clone(), torch.zeros(b.keys.shape[:2], device=x.device)
        if cfg["key_init"] == "kmeans":
            keys, counts = self._kmeans(x, generator)
            counts = counts * batch / len(x)  # an EMA count is per batch
        even = batch / keys.shape[1]
        keys_avg = keys * smoothed(counts).unsqueeze(-1)
        for _ in range(cfg["init_epochs"]):
            for index in torch.randperm(len(x), generator=generator).to(x.device).split(batch):
                z = project(x[index], b.projection)
                keys, keys_avg, counts = ema_step(keys_avg, counts, z, keys, cfg["decay"])
                dead = counts < DEAD_FACTOR * even
                pick = torch.randint(len(index), dead.shape, generator=generator).to(x.device)
                fresh = torch.gather(z, 1, pick.unsqueeze(-1).expand(*pick.shape, z.shape[-1]))
                keys = torch.where(dead.unsqueeze(-1), fresh, keys)
                counts = torch.where(dead, torch.full_like(counts, even), counts)
                keys_avg = torch.where(dead.unsqueeze(-1), fresh * smoothed(counts).unsqueeze(-1), keys_avg)
        b.keys.copy_(keys)

    def _kmeans(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Lloyd's k-means per codebook over all of `x`, from `keys` random samples (distinct if there are
        enough); an empty cluster keeps its centre. Returns (keys, cluster sizes)."""
        b, n = self.bottleneck, len(x)
        p = b.keys.shape[1]
        start = torch.randperm(n, generator=generator)[:p] if n >= p else torch.randint(n, (p,), generator=generator)
        keys = project(x[start.to(x.device)], b.projection)
        batches = torch.arange(n, device=x.device).split(self.config["init_batch_size"])
        for _ in range(KMEANS_ITERATIONS):
            counts, sums = torch.zeros_like(keys[..., 0]), torch.zeros_like(keys)
            for index in batches:
                c, s = cluster_sums(project(x[index], b.projection), keys)
                counts += c
                sums += s
            keys = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp(min=1).unsqueeze(-1), keys)
        return keys, counts

    # ---- the continual phase -------------------------------------------------------------------
    def _scores(self, fetched: torch.Tensor) -> torch.Tensor:
        """Scores (N x classes) from the fetched values, N x C x topk x classes."""
        if self.decoder is None:
            return fetched.mean(dim=(1, 2))
        return self.decoder(fetched.mean(2).flatten(1))

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> torch.Tensor:
        b, cfg = self.bottleneck, self.config
        rows = b.rows(x, cfg["topk"])  # N x C x topk
        values = b.values.view(-1, b.values.shape[-1])  # (C * P) x classes, sharing storage
        fetched = values[rows].requires_grad_()
        params = [fetched, *(self.decoder.parameters() if self.decoder is not None else ())]
        with torch.enable_grad():
            loss = self.task_mask.cross_entropy(self._scores(fetched), y, cfg["label_smoothing"])
            grads = torch.autograd.grad(loss, params)
        touched, inverse = rows.flatten().unique(return_inverse=True)
        value_grad = torch.zeros(len(touched), values.shape[1], device=values.device)
        value_grad.index_add_(0, inverse, grads[0].reshape(-1, values.shape[1]))  # a key fetched k times: k terms
        step = cfg["lr"]
        if cfg["grad_clip"] > 0:  # as torch.nn.utils.clip_grad_norm_ over every trained parameter
            norm = torch.sqrt(value_grad.pow(2).sum() + sum(g.pow(2).sum() for g in grads[1:]))
            step = step * torch.clamp(cfg["grad_clip"] / (norm + 1e-6), max=1.0)
        with torch.no_grad():
            values.index_add_(0, touched, -step * value_grad)
            for param, grad in zip(params[1:], grads[1:]):
                param.sub_(step * grad)
            b.trained.view(-1)[touched] = True
        return loss

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        b = self.bottleneck
        trained = b.trained | ~b.trained.any(1, keepdim=True)  # a codebook never trained: all its keys
        rows = b.rows(x, self.config["topk"], trained)
        return self._scores(b.values.view(-1, b.values.shape[-1])[rows])


class _Bottleneck(nn.Module):
    """The state: projections (C x D x d), keys (C x P x d), which keys have been fetched in training
    (C x P), and the values (C x P x classes), a parameter that the learner updates itself."""

    def __init__(self, projection: torch.Tensor, keys: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("projection", projection)
        self.register_buffer("keys", keys)
        self.values = nn.Parameter(torch.zeros(*keys.shape[:2], num_classes), requires_grad=False)
        self.register_buffer("trained", torch.zeros(keys.shape[:2], dtype=torch.bool))

    def rows(self, x: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the flattened values (C * P) that features x fetch: N x C x k."""
        nearest = nearest_keys(project(x, self.projection), self.keys, k, allowed)  # C x N x k
        offsets = torch.arange(self.keys.shape[0], device=nearest.device).view(-1, 1, 1) * self.keys.shape[1]
        return (nearest + offsets).transpose(0, 1)
