"""Class- and task-incremental streams: disjoint groups of classes, one group per experience."""

from __future__ import annotations

import numpy as np

from clbench.errors import ClbenchError
from clbench.protocols.stream import Experience, Stream


def split_by_class(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    class_order: tuple[int, ...],
    n_experiences: int,
    task_incremental: bool = False,
) -> Stream:
    """Cut the classes, in `class_order`, into `n_experiences` equal groups.

    Class-incremental: no task id at test time, scores masked to the classes seen so far.
    Task-incremental: experience i is task i, its id is given at test time and scores are masked
    to its classes. Within an experience, sample indices keep their dataset order.
    """
    n_classes = len(class_order)
    if n_experiences < 1 or n_classes % n_experiences:
        raise ClbenchError(f"{n_classes} classes cannot be split into {n_experiences} equal experiences")
    groups = np.asarray(class_order, dtype=np.int64).reshape(n_experiences, -1)
    experiences = []
    for i, group in enumerate(groups):
        train = np.flatnonzero(np.isin(train_labels, group))
        test = np.flatnonzero(np.isin(test_labels, group))
        if len(train) == 0:
            raise ClbenchError(f"experience {i} (classes {group.tolist()}) has no training samples")
        experiences.append(Experience(i, tuple(int(c) for c in group), train, test, i if task_incremental else None))
    return Stream(
        protocol="task-incremental" if task_incremental else "class-incremental",
        class_order=tuple(class_order),
        experiences=tuple(experiences),
        mask="task" if task_incremental else "seen",
        task_ids_at_test=task_incremental,
    )
