"""Few-shot episodes: N-way K-shot Q-query tasks drawn from held-out classes, from fixed seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clbench.errors import ClbenchError
from clbench.protocols.stream import Experience, Stream


@dataclass(frozen=True)
class Episode:
    """One few-shot task: support and query rows of the test partition, and its classes."""

    classes: tuple[int, ...]
    support: np.ndarray
    query: np.ndarray


def sample_episodes(labels: np.ndarray, way: int, shot: int, query: int, n: int, seed: int = 0) -> tuple[Episode, ...]:
    """`n` episodes over the classes present in `labels`; episode e draws from
    `numpy.random.RandomState(seed + e)` (NumPy's frozen legacy generator), so the list is the
    same on every machine. Within an episode, classes and images are drawn without replacement."""
    classes, counts = np.unique(labels, return_counts=True)
    if way < 1 or shot < 1 or query < 1 or n < 1:
        raise ClbenchError("way, shot, query and the number of episodes must all be at least 1")
    if way > len(classes):
        raise ClbenchError(f"a {way}-way episode needs {way} classes; the evaluation classes number {len(classes)}")
    if shot + query > counts.min():
        small = int(classes[counts.argmin()])
        raise ClbenchError(f"shot + query = {shot + query} images per class, but class {small} has only {counts.min()}")
    rows_of = {int(c): np.flatnonzero(labels == c) for c in classes}
    episodes = []
    for e in range(n):
        rng = np.random.RandomState((seed + e) % 2**32)
        chosen = rng.choice(classes, size=way, replace=False)
        picks = np.stack([rng.choice(rows_of[int(c)], size=shot + query, replace=False) for c in chosen])
        episodes.append(Episode(tuple(int(c) for c in chosen), picks[:, :shot].ravel(), picks[:, shot:].ravel()))
    return tuple(episodes)


def episodic_stream(train_labels: np.ndarray, test_labels: np.ndarray, way: int, shot: int, query: int,
                    n: int, seed: int = 0) -> Stream:
    """A meta-training experience (every training sample, every training class), then `n` test
    episodes on the test partition's (disjoint, held-out) classes."""
    if np.intersect1d(np.unique(train_labels), np.unique(test_labels)).size:
        raise ClbenchError("episode classes must be held out: the train and test partitions share classes")
    classes = tuple(int(c) for c in np.unique(train_labels))
    meta_train = Experience(0, classes, np.arange(len(train_labels)), np.zeros(0, dtype=np.int64))
    return Stream(protocol="episodes", class_order=classes, experiences=(meta_train,), mask="seen",
                  episodes=sample_episodes(test_labels, way, shot, query, n, seed))
