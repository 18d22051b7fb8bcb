"""Few-shot episode evaluation: snapshot, adapt on the support set, score the queries, restore."""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from clbench.guard import checked_scores, require_finite
from clbench.learner import Learner
from clbench.protocols.episodes import Episode


def _snapshot(learner: Learner) -> tuple[Any, Callable[[Any], None]]:
    """The learner's episodic state (when it declares one: small, no network copy) or its full
    state, copied so that neither later updates nor a restore can alias it."""
    if hasattr(learner, "episodic_state") and hasattr(learner, "load_episodic_state"):
        return copy.deepcopy(learner.episodic_state()), lambda s: learner.load_episodic_state(copy.deepcopy(s))
    return copy.deepcopy(learner.state_dict()), lambda s: learner.load_state_dict(copy.deepcopy(s))


@torch.no_grad()
def _embedded(learner: Learner, batch: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor,
              chunk: int) -> torch.Tensor:
    return torch.cat([learner.encode(batch(part)) for part in rows.split(chunk)])


def evaluate_episodes(learner: Learner, episodes: tuple[Episode, ...], batch: Callable[[torch.Tensor], torch.Tensor],
                      labels: torch.Tensor, num_classes: int, chunk: int, guard: Callable[..., Any]) -> list[float]:
    """Accuracy (%) of each episode's queries after `learn` on its support set, the learner being
    restored after every episode. `batch(rows)` gives the learner's inputs for test rows. Each
    `learn` and `predict` call holds one episode's support or query images: classes of that episode
    only, learned from its support set before its queries are scored.

    A learner with an `encode` method (a frozen encoder) gets every test image encoded ONCE and
    then learns and predicts from those 2-D embeddings: no image is encoded twice. `encode` is the
    frozen encoder, sample by sample, so the batches it is given carry no information between images.
    """
    device = labels.device
    rows = torch.unique(torch.as_tensor(np.concatenate([np.concatenate([e.support, e.query]) for e in episodes]),
                                        device=device))
    if hasattr(learner, "encode"):
        table = guard(learner, "encode", 0, _embedded, learner, batch, rows, chunk)
        inputs = lambda r: table[torch.searchsorted(rows, r)]  # noqa: E731
    else:
        inputs = batch
    state, restore = _snapshot(learner)
    accuracies = []
    for episode in episodes:
        support = torch.as_tensor(episode.support, device=device)
        query = torch.as_tensor(episode.query, device=device)
        guard(learner, "learn", 0, learner.learn, inputs(support), labels[support], None)
        with torch.no_grad():
            scores = guard(learner, "predict", 0, learner.predict, inputs(query), None)
        scores = checked_scores(learner, scores, len(query), num_classes).float()
        require_finite(learner, torch.isfinite(scores).all(), 0)
        mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
        mask[list(episode.classes)] = True
        hits = (scores.masked_fill(~mask, float("-inf")).argmax(1) == labels[query]).float().mean()
        accuracies.append(100.0 * float(hits))
        guard(learner, "load_state_dict", 0, restore, state)
    return accuracies
