"""What every protocol produces: a deterministic stream of experiences, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

MaskMode = Literal["seen", "task", "all"]


@dataclass(frozen=True)
class Experience:
    """One step of a stream: which train and test samples it holds, and its classes and task id."""

    index: int
    classes: tuple[int, ...]
    train_indices: np.ndarray
    test_indices: np.ndarray
    task: int | None = None


@dataclass(frozen=True)
class Stream:
    """A cut of a dataset into experiences.

    `mask` says how the runner restricts scores at evaluation: "seen" (class-incremental: the
    classes of every experience trained so far), "task" (task-incremental: the evaluated
    experience's classes) or "all" (domain-incremental). `task_ids_at_test` says whether the
    evaluated experience's task id is passed to `predict`.
    """

    protocol: str
    class_order: tuple[int, ...]
    experiences: tuple[Experience, ...]
    mask: MaskMode = "seen"
    task_ids_at_test: bool = False
    episodes: tuple = ()
    """Few-shot test episodes (`protocols.episodes.Episode`), evaluated after the stream."""
    clients: tuple = ()
    """Federated: per experience, the experiences of the clients that learn it (merged after)."""

    @property
    def reports_forward_transfer(self) -> bool:
        """Forward transfer means something only where unseen experiences can be scored."""
        return self.mask in ("task", "all")

    def fingerprint(self, dataset: str, n_train: int, n_test: int) -> str:
        """Hash of the dataset identity, class order and every index list: equal iff comparable."""
        digest = hashlib.sha256()
        header = {"dataset": dataset, "n_train": n_train, "n_test": n_test, "protocol": self.protocol,
                  "class_order": list(self.class_order), "mask": self.mask, "task_ids": self.task_ids_at_test}
        digest.update(json.dumps(header, sort_keys=True).encode())
        for exp in self.experiences:
            digest.update(json.dumps([exp.index, list(exp.classes), exp.task]).encode())
            digest.update(np.ascontiguousarray(exp.train_indices, dtype="<i8").tobytes())
            digest.update(b"|")
            digest.update(np.ascontiguousarray(exp.test_indices, dtype="<i8").tobytes())
        for mission in self.clients:
            for client in mission:
                digest.update(json.dumps(list(client.classes)).encode())
                digest.update(np.ascontiguousarray(client.train_indices, dtype="<i8").tobytes())
        for episode in self.episodes:
            digest.update(json.dumps(list(episode.classes)).encode())
            digest.update(np.ascontiguousarray(np.concatenate([episode.support, episode.query]), dtype="<i8").tobytes())
        return digest.hexdigest()[:16]
