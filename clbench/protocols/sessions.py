"""Streams from given index lists: FSCIL sessions (TOPIC/CEC) and any official run list."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clbench.errors import ClbenchError
from clbench.protocols.stream import Experience, Stream


def stream_from_sessions(train_labels: np.ndarray, test_labels: np.ndarray, sessions: Sequence[np.ndarray],
                         protocol: str = "fscil") -> Stream:
    """One experience per session (rows of the train partition). Experience i's test data are the
    test samples of the classes it introduces; evaluation is class-incremental (scores masked to
    the classes seen so far), so after session i the matrix covers every class seen.

    Sessions must introduce disjoint classes, as the FSCIL lists do.
    """
    experiences, seen = [], set()
    for i, rows in enumerate(sessions):
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0 or rows.min() < 0 or rows.max() >= len(train_labels):
            raise ClbenchError(f"session {i + 1} has rows outside the {len(train_labels)} training samples")
        classes = tuple(int(c) for c in np.unique(train_labels[rows]))
        if seen & set(classes):
            raise ClbenchError(f"session {i + 1} repeats classes of an earlier session: {sorted(seen & set(classes))}")
        seen |= set(classes)
        experiences.append(Experience(i, classes, rows, np.flatnonzero(np.isin(test_labels, classes))))
    order = tuple(c for e in experiences for c in e.classes)
    return Stream(protocol=protocol, class_order=order, experiences=tuple(experiences), mask="seen")
